"""MultiWorkerMirroredStrategy, 2 worker processes on localhost: parity.

The test picks two free loopback ports, starts this file twice as workers
(TF_CONFIG set, TFREG_MULTIWORKER_OUTPUT naming where to write the trained
weights), bounds each process in time and kills both in `finally`. Each worker
trains the model of distribute_test with `fit` and with a custom loop using
`tfreg.regularization_loss`, and (tf_keras) with `fit` and the proximal
`tfreg.optimizers.Regularized`; the weights must equal one device's with the
same global batch.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np

_OUTPUT = os.environ.get("TFREG_MULTIWORKER_OUTPUT")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_TIMEOUT = 240  # seconds, per worker process
# Same bound as distribute_test (float32 sums in another order).
WEIGHT_TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def regularized(model):
    """The proximal optimizer over SGD, the model's penalties moved into it."""
    import tfreg  # pylint: disable=g-import-not-at-top
    from tests import distribute_test  # pylint: disable=g-import-not-at-top
    return tfreg.optimizers.Regularized(
        distribute_test.keras.optimizers.SGD(distribute_test.LEARNING_RATE),
        model=model)


def run_worker(output):
    """Worker body: trains with MultiWorkerMirroredStrategy, saves weights."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    # Collective ops must be configured before TensorFlow initializes, i.e.
    # before distribute_test (which lists devices) is imported.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    from tests import distribute_test  # pylint: disable=g-import-not-at-top
    import tfreg  # pylint: disable=g-import-not-at-top

    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    weights = distribute_test.initial_weights()
    # Each worker takes its own half of every global batch (auto-sharding by
    # data), so the 2 replicas together see the global batch of one device.
    # Keras 3.15's fit fails under MultiWorkerMirroredStrategy before the
    # first step ("Attempt to convert a value (PerReplica...) to a Tensor"),
    # with numpy or tf.data input alike; only tf_keras' fit is compared.
    fitted = (distribute_test.fit_weights(strategy, weights)
              + distribute_test.fit_weights(strategy, weights, regularized)
              if distribute_test.LEGACY else [])
    looped = distribute_test.custom_loop(strategy, weights,
                                         tfreg.regularization_loss)
    np.savez(output, *fitted, *looped, fitted=len(fitted),
             looped=len(looped))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


if _OUTPUT:
    run_worker(_OUTPUT)
    sys.exit(0)

# pylint: disable=g-import-not-at-top,g-bad-import-order
from absl.testing import absltest
import tensorflow as tf

import tfreg
from tests import distribute_test


class MultiWorkerTest(absltest.TestCase):

    def test_fit_and_custom_loop_match_one_device(self):
        ports = free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        directory = tempfile.mkdtemp()
        outputs = [os.path.join(directory, f"worker{i}.npz") for i in range(2)]
        processes = []
        try:
            for index in range(2):
                env = dict(os.environ)
                env["TF_CONFIG"] = json.dumps(
                    {"cluster": cluster,
                     "task": {"type": "worker", "index": index}})
                env["TFREG_MULTIWORKER_OUTPUT"] = outputs[index]
                env["PYTHONPATH"] = os.pathsep.join(
                    [ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
                env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                processes.append(subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__)], env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    cwd=ROOT))
            logs = []
            for process in processes:
                log, _ = process.communicate(timeout=WORKER_TIMEOUT)
                logs.append(log.decode(errors="replace"))
            for index, process in enumerate(processes):
                self.assertEqual(process.returncode, 0,
                                 f"worker {index} failed:\n{logs[index][-4000:]}")
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()

        weights = distribute_test.initial_weights()
        one_device = tf.distribute.get_strategy()
        one_fit = (distribute_test.fit_weights(one_device, weights)
                   + distribute_test.fit_weights(one_device, weights,
                                                 regularized)
                   if distribute_test.LEGACY else [])
        one_loop = distribute_test.custom_loop(one_device, weights,
                                               tfreg.regularization_loss)
        for index, output in enumerate(outputs):
            with np.load(output) as saved:
                count = int(saved["fitted"])
                arrays = [saved[f"arr_{i}"]
                          for i in range(count + int(saved["looped"]))]
            fitted, looped = arrays[:count], arrays[count:]
            self.assertLen(looped, len(one_loop))
            self.assertLen(fitted, len(one_fit))
            fit_difference = (
                f"{distribute_test.max_difference(one_fit, fitted):.3g}"
                if one_fit else "not run (Keras 3 fit fails under MWMS)")
            print(f"\nworker {index}: fit max |dw| = {fit_difference}, "
                  f"custom loop max |dw| = "
                  f"{distribute_test.max_difference(one_loop, looped):.3g}")
            for expected, actual in zip(one_fit + one_loop, fitted + looped):
                np.testing.assert_allclose(actual, expected,
                                           **WEIGHT_TOLERANCE)


if __name__ == "__main__":
    absltest.main()
