"""Every keras.applications family shrinks with the same outputs.

The smallest member of each family, random weights, the smallest input it
accepts, no classifier (`include_top=False`, average pooling: the
classifier only adds time): half the groups zeroed, `shrink`, equal
outputs, fewer parameters, every layer that ends a coupling listed with a
reason. The prunable share of each model's units is logged.
"""

import time

from absl import logging
from absl.testing import absltest
from absl.testing import parameterized

from tfreg._keras import keras
from tests import pruning_cases

# (family, smallest member, input side, extra arguments)
FAMILIES = [
    ("convnext", "ConvNeXtTiny", 32, {}),
    ("densenet", "DenseNet121", 32, {}),
    ("efficientnet", "EfficientNetB0", 32, {}),
    ("efficientnet_v2", "EfficientNetV2B0", 32, {}),
    ("inception_v3", "InceptionV3", 75, {}),
    ("inception_resnet_v2", "InceptionResNetV2", 75, {}),
    ("mobilenet", "MobileNet", 32, {"alpha": 0.25}),
    ("mobilenet_v2", "MobileNetV2", 32, {"alpha": 0.35}),
    ("mobilenet_v3", "MobileNetV3Small", 32, {"alpha": 0.75}),
    ("nasnet", "NASNetMobile", 32, {}),
    ("resnet", "ResNet50", 32, {}),
    ("resnet_v2", "ResNet50V2", 32, {}),
    ("vgg", "VGG16", 32, {}),
    ("xception", "Xception", 71, {}),
    ("regnet", "RegNetX002", 32, {}),     # tf_keras only
    ("resnet_rs", "ResNetRS50", 32, {}),  # tf_keras only
]
# Where a coupling ends in these models, and why.
EXPECTED_REASONS = {"LayerNormalization": "normalizes across channels"}


class ZooTest(parameterized.TestCase):

    @parameterized.named_parameters(
        (family, member, side, extra)
        for family, member, side, extra in FAMILIES)
    def test_shrinks_with_equal_outputs(self, member, side, extra):
        builder = getattr(keras.applications, member, None)
        if builder is None:
            self.skipTest(f"keras.applications has no {member} here")
        start = time.time()
        model = builder(weights=None, include_top=False, pooling="avg",
                        input_shape=(side, side, 3), **extra)
        pruning_cases.randomize(model)
        groups, small = pruning_cases.assert_shrinks(self, model)
        self.assertNotEmpty(groups)
        for entry in groups.unsupported:
            self.assertEqual(entry.reason,
                             EXPECTED_REASONS.get(entry.class_name),
                             entry)
        logging.info(
            "%s: %.0f%% of %d units prunable, %d groups, params %d -> %d "
            "(%.2fx fewer), %.1f s", member,
            100 * pruning_cases.prunable_share(groups), groups.unit_count,
            len(groups), model.count_params(), small.count_params(),
            model.count_params() / small.count_params(),
            time.time() - start)


if __name__ == "__main__":
    absltest.main()
