"""`priors.Prior`, the TFP-backed prior: values, allowlist, plain-number configs, lazy import."""

import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfreg
from tests import battery
from tests import priors_util as util
from tfreg import priors

keras = battery.keras
tfd = tfp.distributions


class TfpPriorTest(battery.battery(util.TFP_CASES)):

    def test_prior_matches_named_prior(self):
        x = tf.constant(self.rng.normal(size=(5, 6)), tf.float64)
        for prior, named in (
                (priors.Prior(tfd.Normal(0.3, 0.7), 3),
                 priors.Normal(0.7, 0.3, 3)),
                (priors.Prior(tfd.StudentT(df=2.5, loc=0.3, scale=0.7), 3),
                 priors.StudentT(2.5, 0.7, 0.3, 3)),
                (priors.Prior(tfd.Horseshoe(scale=0.7), 3),
                 priors.Horseshoe(0.7, 3))):
            with self.subTest(prior=prior):
                value, gradient = battery.value_and_gradient(prior, x)
                named_value, named_gradient = battery.value_and_gradient(named, x)
                np.testing.assert_allclose(value, named_value, rtol=1e-12)
                np.testing.assert_allclose(gradient, named_gradient,
                                           rtol=1e-12, atol=1e-14)

    # -- Prior: allowlist and plain-number parameters.

    def test_prior_config_is_class_name_and_numbers(self):
        prior = priors.Prior(tfd.Gumbel(loc=np.float32(0.25), scale=2),
                             num_examples=5)
        self.assertEqual(prior.get_config(), {
            "distribution": {"class_name": "Gumbel",
                             "parameters": {"loc": 0.25, "scale": 2.0}},
            "num_examples": 5, "weight": 1.0})
        config = json.loads(json.dumps(tfreg.serialize(prior)))
        self.assertEqual(tfreg.deserialize(config).get_config(),
                         prior.get_config())

    @parameterized.named_parameters(
        ("unknown_class", {"class_name": "NoSuchDistribution",
                           "parameters": {}}, "a class among"),
        ("not_allowlisted", {"class_name": "Gamma",
                             "parameters": {"concentration": 1.0,
                                            "rate": 1.0}}, "a class among"),
        ("base_class", {"class_name": "Distribution", "parameters": {}},
         "a class among"),
        ("dunder", {"class_name": "__class__", "parameters": {}},
         "a class among"),
        ("dotted_path", {"class_name": "tensorflow_probability.distributions."
                                       "Normal", "parameters": {}},
         "a class name \\(not a path\\)"),
        ("os_system", {"class_name": "os.system", "parameters": {}},
         "a class name \\(not a path\\)"),
        ("string_parameter", {"class_name": "Normal",
                              "parameters": {"loc": "0.0", "scale": 1.0}},
         "parameter 'loc' is '0.0'"),
        ("list_parameter", {"class_name": "Normal",
                            "parameters": {"loc": [0.0, 1.0], "scale": 1.0}},
         "parameter 'loc' is \\[0.0, 1.0\\]"),
        ("none_parameter", {"class_name": "Normal",
                            "parameters": {"loc": None, "scale": 1.0}},
         "parameter 'loc' is None"),
        ("bool_parameter", {"class_name": "Normal",
                            "parameters": {"loc": True, "scale": 1.0}},
         "parameter 'loc' is True"),
        ("nan_parameter", {"class_name": "Normal",
                           "parameters": {"loc": float("nan"), "scale": 1.0}},
         "parameter 'loc' is nan"),
        ("dict_parameter", {"class_name": "Normal",
                            "parameters": {"loc": {"class_name": "Normal"},
                                           "scale": 1.0}},
         "parameter 'loc' is"),
        ("non_parameter_key", {"class_name": "Normal",
                               "parameters": {"name": "x", "scale": 1.0}},
         "parameter 'name' is 'x'"),
        ("unknown_parameter", {"class_name": "Normal",
                               "parameters": {"loc": 0.0, "scale": 1.0,
                                              "bogus": 1.0}},
         "parameters that Normal accepts"),
        ("invalid_value", {"class_name": "Normal",
                           "parameters": {"loc": 0.0, "scale": -1.0}},
         "parameters that Normal accepts"),
        ("extra_key", {"class_name": "Normal", "parameters": {},
                       "module": "os"}, "exactly the keys"),
        ("missing_parameters", {"class_name": "Normal"}, "exactly the keys"),
        # An int beyond float range overflowed math.isfinite.
        ("huge_int_parameter", {"class_name": "Normal",
                                "parameters": {"loc": 10**400, "scale": 1.0}},
         f"parameter 'loc' is {10**400}"),
        # A constructor argument that is not a numeric parameter raised an
        # AttributeError deep inside TFP.
        ("not_a_numeric_parameter",
         {"class_name": "SinhArcsinh",
          "parameters": {"loc": 0.0, "scale": 1.0, "distribution": 1.0}},
         "parameters that SinhArcsinh accepts, among \\['loc', 'scale', "
         "'skewness', 'tailweight'\\]; parameter 'distribution' is not one"),
        # Flushed to 0 in every dtype.
        ("subnormal_parameter", {"class_name": "Normal",
                                 "parameters": {"loc": 0.0, "scale": 1e-310}},
         "parameter 'scale' = 0 or within float64's normal range "
         "\\[2.23e-308, 1.8e\\+308\\] \\(scale = 1e-310\\)"),
        ("not_a_dict", "Normal", "a tfp.distributions instance"),
    )
    def test_prior_rejects_config(self, distribution, message):
        with self.assertRaisesRegex(
                ValueError, "Invalid value for argument `distribution`. "
                f"Expected .*{message}"):
            priors.Prior(distribution)
        config = {"class_name": "Prior", "registered_name": "tfreg>Prior",
                  "config": {"distribution": distribution, "num_examples": 1}}
        with self.assertRaisesRegex(ValueError, "argument `distribution`"):
            tfreg.deserialize(config)

    def test_prior_rejects_instances(self):
        for distribution, message in (
                (tfd.Normal(tf.constant(0.0), 1.0),
                 "parameter 'loc' is <tf.Tensor"),
                (tfd.Normal(np.zeros(()), 1.0), "parameter 'loc' is array"),
                (tfd.Normal(0.0, tf.Variable(1.0)),
                 "parameter 'scale' is <tf.Variable"),
                (tfd.Normal([0.0, 1.0], 1.0), "parameter 'loc' is \\[0.0"),
                (tfd.Gamma(1.0, 1.0), "a class among"),
                (tfd.Sample(tfd.Normal(0.0, 1.0), 3), "a class among"),
                (stats.norm(0, 1), "a tfp.distributions instance"),
                (print, "a tfp.distributions instance")):
            with self.subTest(distribution=distribution):
                with self.assertRaisesRegex(
                        ValueError, "Invalid value for argument "
                        f"`distribution`. Expected.*{message}"):
                    priors.Prior(distribution)

    @parameterized.parameters(1e300, 1e-50)
    def test_prior_parameter_beyond_float32(self, scale):
        # TFP computes in the parameters' dtype: float32 makes scale=1e300
        # inf (penalty inf, true 2074.8) and scale=1e-50 zero. They raise
        # there and are exact in float64.
        prior = priors.Prior(tfd.Normal(0.0, scale), util.NUM_EXAMPLES)
        x = scale * np.array([0.0, 0.5, -2.0])
        np.testing.assert_allclose(
            prior(tf.constant(x)),
            util.scipy_reference(stats.norm(0.0, scale))(x), rtol=1e-12)
        with self.assertRaisesRegex(ValueError, "^" + util.escape(
                "Prior cannot be computed in float32: it needs parameter "
                "'scale' = 0 or within float32's normal range [1.18e-38, "
                f"3.4e+38] (scale = {scale!r}). Received: distribution="
                "{'class_name': 'Normal', 'parameters': {'loc': 0.0, "
                f"'scale': {scale!r}}}}}. Use float64 weights.") + "$"):
            prior(tf.constant(x, tf.float32))

    def test_every_allowlisted_class_exists_in_tfp(self):
        for name in priors.ALLOWED_DISTRIBUTIONS:
            with self.subTest(name=name):
                self.assertTrue(issubclass(getattr(tfd, name),
                                           tfd.Distribution))

    def test_import_tfreg_does_not_import_tfp(self):
        code = (
            "import sys, tensorflow as tf, tfreg\n"
            "assert 'tensorflow_probability' not in sys.modules\n"
            "x = tf.constant([0.5, -1.0])\n"
            "for name in ('normal', 'laplace', 'student_t', 'cauchy',\n"
            "             'horseshoe', 'spike_and_slab'):\n"
            "    float(tfreg.get(name)(x))\n"
            "float(tfreg.get('mean_field_kl')(tf.ones((2, 3))))\n"
            "assert 'tensorflow_probability' not in sys.modules\n"
            "tfreg.deserialize({'class_name': 'Prior', 'config': {\n"
            "    'distribution': {'class_name': 'Normal',\n"
            "                     'parameters': {'loc': 0.0, 'scale': 1.0}}}})\n"
            "assert 'tensorflow_probability' in sys.modules\n")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(
                   [root, os.environ.get("PYTHONPATH", "")])}
        result = subprocess.run([sys.executable, "-c", code], env=env,
                                capture_output=True, text=True, timeout=300,
                                check=False)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])


if __name__ == "__main__":
    absltest.main()
