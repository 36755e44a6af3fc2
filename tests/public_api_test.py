"""The declared public surface: `__all__` of each public module, one version."""

import os
import subprocess
import sys
import types

from absl.testing import absltest
from absl.testing import parameterized

import tfreg
from tfreg import base
from tfreg import penalties
from tfreg import priors
from tfreg import regularizers
from tfreg import serialization
from tfreg import strength
from tfreg import structured
from tfreg import structured_math
from tfreg import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = (base, penalties, priors, regularizers, serialization, strength,
           structured, structured_math, validation)


def _defined_here(module):
    """The public names a module defines itself (not imports of others)."""
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if getattr(value, "__module__", module.__name__).startswith(
                module.__name__):
            yield name


class PublicApiTest(parameterized.TestCase):

    @parameterized.named_parameters(
        *[(module.__name__, module) for module in MODULES])
    def test_all_lists_exactly_the_public_definitions(self, module):
        for name in module.__all__:
            self.assertTrue(hasattr(module, name), name)
        self.assertCountEqual(_defined_here(module), module.__all__)

    def test_priors_exposes_no_helpers(self):
        public = {name for name in dir(priors) if not name.startswith("_")}
        self.assertEqual(public, set(priors.__all__))
        self.assertEqual(
            public, {"ALLOWED_DISTRIBUTIONS", "Cauchy", "Horseshoe", "Laplace",
                     "MeanFieldKL", "Normal", "Prior", "SpikeAndSlab",
                     "StudentT"})

    def test_top_level_all_resolves(self):
        for name in tfreg.__all__:
            self.assertTrue(hasattr(tfreg, name), name)

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
