"""tools/xla_audit.py: every registered regularizer passes, and bad HLO fails."""

import io
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

import tfreg
from tools import xla_audit

_CLASSES = [(cls.__name__, cls) for cls in xla_audit.registered_classes()]


def _line(text):
    """One HLO instruction with the metadata XLA attaches to it."""
    return f'  {text}, metadata={{op_type="Op" op_name="op"}}'


class UnseededRandom(tfreg.Regularizer):
    """XLA ignores the seed of a stateful random op."""

    def penalty(self, x):
        noise = tf.random.uniform(tf.shape(x), seed=7, dtype=x.dtype)
        return tf.reduce_sum(x * noise)


class SeededStatelessRandom(tfreg.Regularizer):
    """A stateless random op carries its seed in the graph: portable."""

    def penalty(self, x):
        noise = tf.random.stateless_uniform(x.shape, seed=(1, 2),
                                            dtype=x.dtype)
        return tf.reduce_sum(x * noise)


class Float64Inside(tfreg.Regularizer):
    """Upcasts to float64, which TPUs do not have."""

    def penalty(self, x):
        return tf.cast(tf.reduce_sum(tf.cast(x, tf.float64) ** 2), x.dtype)


class DataDependentShape(tfreg.Regularizer):
    """boolean_mask gives a bounded dynamic shape under XLA."""

    def penalty(self, x):
        return tf.reduce_sum(tf.boolean_mask(x, x > 0))


class HostCall(tfreg.Regularizer):
    """A Python callback cannot be compiled at all."""

    def penalty(self, x):
        value = tf.py_function(lambda t: tf.reduce_sum(t), [x], x.dtype)
        return tf.reshape(value, ())


class CheckHloTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("python_callback", 'custom-call(f32[] %a), '
         'custom_call_target="xla_python_cpu_callback"', "host callback"),
        ("send_to_host", 'custom-call(f32[] %a), '
         'custom_call_target="SendToHost"', "host callback"),
        ("host_send", "%s = (f32[], u32[], token[]) send(f32[] %a, token[] %t),"
         " channel_id=1, is_host_transfer=true", "host transfer"),
        ("outfeed", "%o = token[] outfeed(f32[] %a, token[] %t)",
         "host transfer"),
        ("other_custom_call", 'custom-call(f32[] %a), '
         'custom_call_target="__onednn$matmul"', "not in the allowlist"),
        ("bounded_dim", "%g = f32[<=4]{0} reshape(f32[<=4]{0} %a)",
         "dynamic shape f32[<=4]"),
        ("unknown_dim", "%g = f32[?,3]{1,0} parameter(0)",
         "dynamic shape f32[?,3]"),
        ("stateful_rng", "%r = f32[2]{0} rng(f32[] %lo, f32[] %hi), "
         "distribution=rng_uniform", "random op without an explicit seed"),
    )
    def test_flags(self, instruction, expected):
        if "custom_call_target" in instruction:
            instruction = f"%c = f32[] {instruction}"
        problems = xla_audit.check_hlo(_line(instruction))
        self.assertLen(problems, 1, problems)
        self.assertIn(expected, problems[0])

    def test_float64_only_on_the_bfloat16_path(self):
        hlo = _line("%c = f64[3]{0} convert(f32[3]{0} %a)")
        self.assertEqual(xla_audit.check_hlo(hlo, bfloat16_path=False), [])
        self.assertEqual(xla_audit.check_hlo(hlo, bfloat16_path=True),
                         ["f64 on the bfloat16 path"])

    def test_accepts_portable_hlo(self):
        hlo = "\n".join([
            "ENTRY %main (a: f32[2,2]) -> f32[] {",
            _line("%a = f32[2,2]{1,0} parameter(0)"),
            _line('%s = f32[2,2]{1,0} custom-call(f32[2,2]{1,0} %a), '
                  'custom_call_target="Sharding", sharding={replicated}'),
            _line("%k = (u64[2]{0}, u32[2]{0}) rng-bit-generator(u64[2]{0} "
                  "%key), algorithm=rng_default"),
            # Quoted text (op names, source files) is not HLO.
            '  ROOT %r = f32[] reduce(f32[2,2]{1,0} %s, f32[] %z), '
            'metadata={op_name="x[<=3] rng(f64[1])"}',
            "}",
        ])
        self.assertEqual(xla_audit.check_hlo(hlo, bfloat16_path=True), [])
        self.assertEqual(xla_audit.count_ops(hlo), 4)

    def test_counts_fusions_and_ops(self):
        hlo = "\n".join([
            _line("%f = f32[4]{0} fusion(f32[4]{0} %a), kind=kLoop, "
                  "calls=%fused_computation"),
            _line("%t = (f32[], f32[4]{0}) tuple(f32[] %b, f32[4]{0} %f)"),
        ])
        self.assertEqual(xla_audit.count_fusions(hlo), 1)
        self.assertEqual(xla_audit.count_ops(hlo), 2)


class AuditTest(parameterized.TestCase):

    @parameterized.named_parameters(*_CLASSES)
    def test_registered_class_is_portable(self, cls):
        result = xla_audit.audit_class(cls)
        self.assertEqual(result.problems, [], result.line())
        self.assertEqual(result.verdict, "PASS", result.line())
        dtypes = {case.label.rsplit("/", 1)[1] for case in result.cases}
        self.assertEqual(dtypes, {"float32", "bfloat16"})
        for case in result.cases:
            self.assertGreater(case.hlo_ops, 0, case.label)

    @parameterized.named_parameters(
        ("unseeded_random", UnseededRandom, "random op without an explicit"),
        ("float64", Float64Inside, "f64 on the bfloat16 path"),
        ("dynamic_shape", DataDependentShape, "dynamic shape"),
        ("host_call", HostCall, "does not lower"))
    def test_fails_non_portable_regularizer(self, cls, expected):
        result = xla_audit.audit_class(cls)
        self.assertEqual(result.verdict, "FAIL")
        self.assertTrue(any(expected in p for p in result.problems),
                        result.problems)
        self.assertIn("FAIL", result.line())

    def test_float64_fails_only_in_bfloat16_lowerings(self):
        result = xla_audit.audit_class(Float64Inside)
        failing = {case.label for case in result.cases if case.problems}
        self.assertTrue(failing)
        self.assertTrue(all(label.endswith("/bfloat16") for label in failing))

    def test_stateless_random_passes(self):
        self.assertEqual(
            xla_audit.audit_class(SeededStatelessRandom).verdict, "PASS")

    def test_kinds_and_shapes(self):
        self.assertEqual(xla_audit.kinds_of(tfreg.Orthogonal), ("weight",))
        self.assertEqual(xla_audit.kinds_of(tfreg.L2), ("weight", "activity"))
        self.assertEqual(xla_audit.kinds_of(tfreg.DeCov), ("activity",))
        shapes = dict(xla_audit.shapes_of(tfreg.priors.MeanFieldKL))
        self.assertTrue(all(s[0] == 2 for s in shapes.values()))

    def test_main_prints_one_line_per_class_and_exit_code(self):
        out = io.StringIO()
        self.assertEqual(xla_audit.main(["--only", "L1", "Orthogonal"], out), 0,
                         out.getvalue())
        lines = out.getvalue().splitlines()
        self.assertLen(lines, 4)  # header, two classes, summary
        self.assertRegex(lines[1], r"^L1 +PASS +lowerings=6 +hlo_ops=\d+")
        self.assertRegex(lines[2], r"^Orthogonal +PASS +lowerings=4 ")
        self.assertEqual(lines[3], "2 pass, 0 skipped, 0 fail")
        with mock.patch.object(xla_audit, "registered_classes",
                               return_value=[UnseededRandom]):
            out = io.StringIO()
            self.assertEqual(xla_audit.main([], out), 1)
        self.assertIn("UnseededRandom", out.getvalue())
        self.assertIn("0 pass, 0 skipped, 1 fail", out.getvalue())


if __name__ == "__main__":
    absltest.main()
