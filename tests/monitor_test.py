"""tfreg.summary and tfreg.PenaltyLogger, in the active Keras."""

import glob
import os
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras

keras = _keras.keras


def _model():
    return keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(3, name="a", kernel_initializer="ones",
                           kernel_regularizer=tfreg.L2(0.5),
                           bias_regularizer=tfreg.L1(1.0),
                           bias_initializer="ones"),
        keras.layers.Dense(1, name="b", kernel_initializer="ones"),
    ])


class SummaryTest(absltest.TestCase):

    def test_rows_values_and_shares(self):
        model = _model()
        tfreg.apply(model, tfreg.L1(2.0), include="^b/kernel")
        printed = []
        rows = tfreg.summary(model, print_fn=printed.append)
        by_weight = {(row["layer"], row["weight"]): row for row in rows}
        self.assertEqual(sorted(by_weight),
                         [("a", "bias"), ("a", "kernel"), ("b", "kernel")])
        self.assertEqual(by_weight["a", "kernel"]["penalty"], 3.0)
        self.assertEqual(by_weight["a", "bias"]["penalty"], 3.0)
        self.assertEqual(by_weight["b", "kernel"]["penalty"], 6.0)
        self.assertEqual(by_weight["b", "kernel"]["share"], 0.5)
        self.assertEqual(by_weight["a", "kernel"]["regularizer"],
                         "L2(l2=0.5)")
        self.assertAlmostEqual(sum(row["share"] for row in rows), 1.0)
        self.assertLen(printed, 1)
        lines = printed[0].splitlines()
        self.assertEqual(lines[0].split(),
                         ["layer", "weight", "regularizer", "penalty", "share"])
        self.assertEqual(lines[-1].split(), ["total", "12", "100.0%"])
        # The table agrees with what Keras trains on.
        self.assertAlmostEqual(sum(float(loss) for loss in model.losses), 12.0)

    def test_attach_l2sp_is_listed(self):
        if not hasattr(tfreg, "attach_l2sp"):
            self.skipTest("tfreg.attach_l2sp is not in this tfreg")
        model = keras.Sequential([keras.Input((2,)),
                                  keras.layers.Dense(1, name="d")])
        tfreg.attach_l2sp(model, 0.1)
        rows = tfreg.summary(model, print_fn=None)
        self.assertEqual([(row["layer"], row["weight"]) for row in rows],
                         [("d", "kernel")])
        self.assertEqual(rows[0]["penalty"], 0.0)

    def test_no_regularizers(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        printed = []
        self.assertEqual(tfreg.summary(model, print_fn=printed.append), [])
        self.assertEqual(printed[0].splitlines()[-1].split(),
                         ["total", "0", "0.0%"])


class PenaltyLoggerTest(absltest.TestCase):

    def _fit(self, logger, epochs=3):
        model = _model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse",
                      jit_compile=True)
        x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
        y = np.zeros((16, 1), np.float32)
        history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0,
                            callbacks=[logger])
        return model, history

    def test_history_holds_each_penalty_per_epoch(self):
        model, history = self._fit(tfreg.PenaltyLogger())
        logs = history.history
        keys = sorted(key for key in logs if key.startswith("penalty/"))
        self.assertEqual(keys, ["penalty/a/bias", "penalty/a/kernel",
                                "penalty/total"])
        for key in keys:
            self.assertLen(logs[key], 3)
        # Training shrinks the regularized weights, so the penalty falls.
        self.assertLess(logs["penalty/total"][-1], logs["penalty/total"][0])
        rows = tfreg.summary(model, print_fn=None)
        self.assertAlmostEqual(logs["penalty/total"][-1],
                               sum(row["penalty"] for row in rows), places=5)
        np.testing.assert_allclose(
            np.add(logs["penalty/a/bias"], logs["penalty/a/kernel"]),
            logs["penalty/total"], rtol=1e-6)

    def test_layers_that_share_a_name_keep_their_own_keys(self):
        # Both directions of a Bidirectional LSTM hold a layer "lstm_cell".
        model = keras.Sequential([
            keras.Input((3, 2)),
            keras.layers.Bidirectional(
                keras.layers.LSTM(2, kernel_regularizer=tfreg.L2(0.5)),
                name="bi")])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        x = np.ones((4, 3, 2), np.float32)
        history = model.fit(x, np.zeros((4, 4), np.float32), epochs=1,
                            verbose=0, callbacks=[tfreg.PenaltyLogger()])
        kernels = {key: value[0] for key, value in history.history.items()
                   if key.startswith("penalty/") and key != "penalty/total"}
        self.assertEqual(sorted(kernels), [
            "penalty/bi/backward_lstm/lstm_cell/kernel",
            "penalty/bi/forward_lstm/lstm_cell/kernel"])
        self.assertAlmostEqual(sum(kernels.values()),
                               history.history["penalty/total"][0], places=5)
        printed = []
        tfreg.summary(model, print_fn=printed.append)
        self.assertEqual(
            sorted(line.split()[0] for line in printed[0].splitlines()[2:4]),
            ["bi/backward_lstm/lstm_cell", "bi/forward_lstm/lstm_cell"])

    def test_tensorboard_scalars(self):
        with tempfile.TemporaryDirectory() as log_dir:
            _, history = self._fit(tfreg.PenaltyLogger(log_dir=log_dir),
                                   epochs=2)
            files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
            self.assertLen(files, 1)
            scalars = {}
            for event in tf.compat.v1.train.summary_iterator(files[0]):
                for value in event.summary.value:
                    scalars.setdefault(value.tag, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
        self.assertEqual(sorted(scalars), ["penalty/a/bias",
                                           "penalty/a/kernel",
                                           "penalty/total"])
        self.assertEqual([step for step, _ in scalars["penalty/total"]],
                         [0, 1])
        np.testing.assert_allclose(
            [value for _, value in scalars["penalty/total"]],
            history.history["penalty/total"], rtol=1e-6)


if __name__ == "__main__":
    absltest.main()
