"""docs/api.md is what tools/api_docs.py makes from today's docstrings."""

from absl.testing import absltest

import tfreg
from tools import api_docs


class ApiDocsTest(absltest.TestCase):

    def test_docs_are_current(self):
        with open(api_docs.OUTPUT, encoding="utf-8") as f:
            current = f.read()
        self.assertTrue(
            current == api_docs.render(),
            "docs/api.md is stale: run python tools/api_docs.py")

    def test_every_public_name_is_documented(self):
        text = api_docs.render()
        documented = dict(api_docs.modules())
        self.assertContainsSubset(["tfreg", "tfreg.priors", "tfreg.validation"],
                                  documented)
        for qualified, module in documented.items():
            for name in module.__all__:
                self.assertIn(f"### `{qualified}.{name}", text)
        self.assertNotIn("tfreg.cli", text)
        self.assertNotIn("tfreg.walk", text)

    def test_a_changed_docstring_makes_the_docs_stale(self):
        before = api_docs.render()
        original = tfreg.L2.__doc__
        tfreg.L2.__doc__ = original + "\n\nA new sentence."
        try:
            self.assertNotEqual(api_docs.render(), before)
        finally:
            tfreg.L2.__doc__ = original


if __name__ == "__main__":
    absltest.main()
