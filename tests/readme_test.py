"""README.md's Python blocks run, in order, and give what their comments say.

The blocks share one namespace, as a reader typing them into one session
would. A one-line expression whose trailing comment is a Python literal
(`tfreg.remove(model)   # ['hidden/kernel']`) must evaluate to that literal.
"""

import ast
import io
import os
import re
import subprocess
import sys
import tempfile
import tokenize

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_NO_CLAIM = object()


def python_blocks(text):
    """(line number in the file, source) of each ```python block of `text`."""
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1))
            for match in _BLOCK.finditer(text)]


def _literal_comments(source):
    """{line: value} of the trailing comments of `source` that are literals."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string[1:].strip()
            try:
                found[token.start[0]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                pass  # Prose, not a claim.
    return found


def run_readme():
    """Runs README's blocks in one namespace; returns how many literal
    comments it checked. An error names the README line."""
    with open(README, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    namespace = {"__name__": "readme"}
    checked = 0
    for first_line, source in blocks:
        claims = _literal_comments(source)
        # Line numbers of the file, for tracebacks and messages.
        tree = ast.increment_lineno(ast.parse(source), first_line - 1)
        for statement in tree.body:
            claim = claims.get(statement.lineno - first_line + 1, _NO_CLAIM)
            if (isinstance(statement, ast.Expr) and claim is not _NO_CLAIM
                    and statement.lineno == statement.end_lineno):
                value = eval(  # pylint: disable=eval-used
                    compile(ast.Expression(statement.value), README, "eval"),
                    namespace)
                if value != claim:
                    raise AssertionError(
                        f"README.md, line {statement.lineno} gives "
                        f"{value!r}, its comment {claim!r}")
                checked += 1
            else:
                exec(  # pylint: disable=exec-used
                    compile(ast.Module([statement], []), README, "exec"),
                    namespace)
    return checked


class ReadmeTest(absltest.TestCase):

    def setUp(self):
        super().setUp()
        with open(README, encoding="utf-8") as f:
            self.blocks = python_blocks(f.read())

    def test_blocks_are_found(self):
        self.assertGreaterEqual(len(self.blocks), 7)
        first_line, first = self.blocks[0]
        self.assertTrue(first.startswith("import numpy as np\n"), first)
        self.assertGreater(first_line, 1)

    def test_literal_comments_are_found(self):
        claims = [value for _, source in self.blocks
                  for value in _literal_comments(source).values()]
        self.assertIn(["hidden/kernel"], claims)

    def test_blocks_run_and_show_what_they_say(self):
        # In a process of their own, as a reader runs them: a class they
        # register must not reach the other tests' registry. They write
        # model.keras and logs/ in a temporary directory.
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join(
                       [ROOT, os.environ.get("PYTHONPATH", "")]))
        with tempfile.TemporaryDirectory() as directory:
            process = subprocess.run(
                [sys.executable, "-c", "from tests import readme_test; "
                 "print(readme_test.run_readme())"],
                cwd=directory, env=env, capture_output=True, text=True,
                timeout=600, check=False)
        self.assertEqual(process.returncode, 0, process.stderr[-3000:])
        self.assertGreaterEqual(int(process.stdout.split()[-1]), 2)


if __name__ == "__main__":
    absltest.main()
