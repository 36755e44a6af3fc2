"""Every Python file under tfreg/, tests/ and tools/ has a Bazel target."""

import os
import re

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tfreg", "tests", "tools")


def _has_target(build_text, filename):
    """True when `filename` is a src, or a test macro names it implicitly."""
    stem = filename[:-len(".py")]
    return (f'"{filename}"' in build_text
            or re.search(rf'(?:tfreg_)?py_test\(\s*name = "{stem}",\s*'
                         rf'(?!srcs)', build_text) is not None)


class BuildTargetsTest(absltest.TestCase):

    def test_every_python_file_has_a_target(self):
        missing = []
        for package in PACKAGES:
            directory = os.path.join(ROOT, package)
            with open(os.path.join(directory, "BUILD")) as f:
                build_text = f.read()
            for filename in sorted(os.listdir(directory)):
                path = os.path.join(directory, filename)
                if filename == "__init__.py" and not os.path.getsize(path):
                    continue  # Bazel adds empty ones to its runfiles.
                if filename.endswith(".py") and not _has_target(build_text,
                                                                filename):
                    missing.append(f"{package}/{filename}")
        self.assertEmpty(missing, "Python files without a Bazel target.")

    def test_detects_a_missing_target(self):
        self.assertFalse(_has_target('py_library(srcs = ["a.py"])', "b.py"))
        self.assertTrue(_has_target('tfreg_py_test(\n    name = "b",\n'
                                    '    size = "small",\n)', "b.py"))


if __name__ == "__main__":
    absltest.main()
