"""The declared public surface: `__all__` of each module, one version."""

import importlib
import os
import pkgutil
import subprocess
import sys
import types

from absl.testing import absltest
from absl.testing import parameterized

import tfreg
from tfreg import priors
from tools import api_docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The public surface: what docs/api.md documents.
DOCUMENTED = api_docs.modules()
# Every other library module (not the `cli` application, not private ones).
UNDOCUMENTED = sorted(
    {info.name for info in pkgutil.walk_packages(tfreg.__path__, "tfreg.")}
    - {name for name, _ in DOCUMENTED}
    - {"tfreg.__main__"})
UNDOCUMENTED = [name for name in UNDOCUMENTED
                if not name.startswith("tfreg.cli")
                and not any(part.startswith("_")
                            for part in name.split(".")[1:])]


def _public_names(module, origin):
    """The public, non-module names of `module` whose value comes from a
    module named `origin...` (constants count as the module's own)."""
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if getattr(value, "__module__", module.__name__).startswith(origin):
            yield name


class PublicApiTest(parameterized.TestCase):

    @parameterized.named_parameters(*DOCUMENTED)
    def test_documented_all_lists_exactly_the_public_names(self, module):
        # A documented module may publish names it takes from a private
        # module of tfreg (`validation` from `_checks`); submodules listed
        # in `__all__` are documented as modules.
        for name in module.__all__:
            self.assertTrue(hasattr(module, name), name)
        listed = [name for name in module.__all__
                  if not isinstance(getattr(module, name), types.ModuleType)]
        self.assertCountEqual(_public_names(module, "tfreg"), listed)

    @parameterized.named_parameters(*[(name, name) for name in UNDOCUMENTED])
    def test_undocumented_all_lists_exactly_the_own_definitions(self, name):
        module = importlib.import_module(name)
        for listed in module.__all__:
            self.assertTrue(hasattr(module, listed), listed)
        self.assertCountEqual(_public_names(module, name), module.__all__)

    def test_the_documented_surface(self):
        documented = [name for name, _ in DOCUMENTED]
        self.assertContainsSubset(
            ["tfreg", "tfreg.priors", "tfreg.pruning", "tfreg.validation"],
            documented)
        self.assertNotIn("tfreg.walk", documented)
        self.assertIn("tfreg.walk", UNDOCUMENTED)
        self.assertIn("tfreg.structured", UNDOCUMENTED)

    def test_top_level_all_is_sorted(self):
        self.assertEqual(list(tfreg.__all__), sorted(tfreg.__all__))

    def test_priors_exposes_no_helpers(self):
        public = {name for name in dir(priors) if not name.startswith("_")}
        self.assertEqual(public, set(priors.__all__))
        self.assertEqual(
            public, {"ALLOWED_DISTRIBUTIONS", "Cauchy", "Horseshoe", "Laplace",
                     "MeanFieldKL", "Normal", "Prior", "SpikeAndSlab",
                     "StudentT"})

    def test_version_is_read_by_setup_without_tensorflow(self):
        code = (
            "import runpy, sys, setuptools\n"
            "setuptools.setup = lambda **kwargs: print(kwargs['version'])\n"
            "runpy.run_path('setup.py')\n"
            "assert 'tensorflow' not in sys.modules\n")
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                                capture_output=True, text=True, timeout=120,
                                check=False)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertEqual(result.stdout.strip(), tfreg.__version__)


if __name__ == "__main__":
    absltest.main()
