"""Every `>>>` example in tfreg's docstrings runs and prints what it shows."""

import doctest
import importlib
import pkgutil

from absl.testing import absltest
from absl.testing import parameterized

import tfreg

# The command-line entry point has no docstring examples and must not run.
SKIPPED = ("tfreg.__main__",)
MODULES = sorted(
    info.name for info in pkgutil.walk_packages(tfreg.__path__, "tfreg.")
    if info.name not in SKIPPED)


class DoctestTest(parameterized.TestCase):

    def test_modules_are_found(self):
        for name in ("tfreg.base", "tfreg.attach", "tfreg.monitor"):
            self.assertIn(name, MODULES)

    @parameterized.named_parameters(*[(name, name) for name in MODULES])
    def test_docstring_examples(self, name):
        module = importlib.import_module(name)
        finder = doctest.DocTestFinder(exclude_empty=True)
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        report = []
        for test in finder.find(module, name, globs={}):
            runner.run(test, out=report.append)
        results = runner.summarize(verbose=False)
        self.assertEqual(results.failed, 0, "".join(report))


if __name__ == "__main__":
    absltest.main()
