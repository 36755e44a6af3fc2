"""README.md's Python blocks run, in order, and print what their comments say.

The blocks share one namespace, as a reader typing them into one session
would. A one-line expression whose trailing comment is a Python literal
(`tfreg.remove(model)   # ['hidden/kernel']`) must evaluate to that literal.
"""

import ast
import io
import os
import re
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
            try:
                found[token.start[0]] = ast.literal_eval(token.string[1:].strip())
            except (ValueError, SyntaxError):
                pass
    return found


class ReadmeTest(absltest.TestCase):

    def setUp(self):
        super().setUp()
        with open(README, encoding="utf-8") as f:
            self.blocks = python_blocks(f.read())
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        # The blocks write model.keras and logs/ where they run.
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory.name)

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
        namespace = {"__name__": "readme"}
        checked = 0
        for first_line, source in self.blocks:
            claims = _literal_comments(source)
            for statement in ast.parse(source).body:
                line = first_line + statement.lineno - 1
                where = f"README.md:{line}"
                claim = claims.get(statement.lineno, _NO_CLAIM)
                one_line = statement.lineno == statement.end_lineno
                if (isinstance(statement, ast.Expr) and one_line
                        and claim is not _NO_CLAIM):
                    value = eval(  # pylint: disable=eval-used
                        compile(ast.Expression(statement.value), where,
                                "eval"), namespace)
                    self.assertEqual(value, claim, where)
                    checked += 1
                else:
                    exec(compile(ast.Module([statement], []), where,  # pylint: disable=exec-used
                                 "exec"), namespace)
        self.assertGreaterEqual(checked, 2)


if __name__ == "__main__":
    absltest.main()
