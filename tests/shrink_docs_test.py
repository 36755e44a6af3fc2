"""docs/shrink.md lists the layer rules registered today."""

from absl.testing import absltest

import tfreg
from tfreg._keras import keras
from tools import shrink_rules


class ShrinkDocsTest(absltest.TestCase):

    def test_the_list_of_rules_is_current(self):
        with open(shrink_rules.OUTPUT, encoding="utf-8") as f:
            current = f.read()
        self.assertTrue(current == shrink_rules.render(current),
                        "docs/shrink.md's list of rules is stale: run "
                        "python tools/shrink_rules.py")

    def test_a_registered_rule_makes_the_list_stale(self):
        with open(shrink_rules.OUTPUT, encoding="utf-8") as f:
            current = f.read()

        class Custom(tfreg.pruning.PassThrough):
            pass

        layer_class = type("MyScale", (keras.layers.Layer,), {})
        tfreg.pruning.register_layer(layer_class, Custom())
        try:
            self.assertIn("- `MyScale`: channels pass through",
                          shrink_rules.render_list())
            self.assertNotEqual(shrink_rules.render(current), current)
        finally:
            tfreg.pruning.rules.unregister_layer(layer_class)
        self.assertEqual(shrink_rules.render(current), current)


if __name__ == "__main__":
    absltest.main()
