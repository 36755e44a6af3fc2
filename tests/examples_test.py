"""Every script in examples/ runs to completion (small sizes, subprocesses)."""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tempdir(test):
    """A fresh directory removed after `test` (works under pytest too)."""
    directory = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory
EXAMPLES = os.path.join(ROOT, "examples")
# Short runs: the scripts take --epochs; their data are small already.
ARGUMENTS = {"choose_prior.py": ["--epochs", "3"]}
EXPECTED = {
    "keras_model.py": "reloaded kernel regularizer: L2(l2=0.001)",
    "jit_training.py": "epoch 2: loss",
    "choose_prior.py": "L2: |w| of the 5 true features",
    "fine_tune_l2sp.py": "mean |W - W_pretrained| per layer",
    "custom_regularizer.py": "reloaded: MaxNormPenalty(factor=1.0, limit=1.0)",
    "sparse_training.py": "proximal GroupLasso(1e-3)",
    "residual_cnn_shrink.py": "trade-off plot: shrink_tradeoff.png",
}
# Bazel adds an empty __init__.py to the examples in its runfiles.
SCRIPTS = sorted(name for name in os.listdir(EXAMPLES)
                 if name.endswith(".py") and name != "__init__.py")


class ExamplesTest(parameterized.TestCase):

    def test_every_example_is_listed(self):
        self.assertEqual(SCRIPTS, sorted(EXPECTED))

    @parameterized.named_parameters(
        *[(name[:-len(".py")], name) for name in SCRIPTS])
    def test_example_runs(self, name):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join(
                       [ROOT, os.environ.get("PYTHONPATH", "")]))
        arguments = ARGUMENTS.get(name, ["--epochs", "2"])
        process = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, name), *arguments],
            capture_output=True, text=True, env=env, timeout=300,
            cwd=_tempdir(self))
        self.assertEqual(process.returncode, 0,
                         process.stdout + process.stderr[-3000:])
        self.assertIn(EXPECTED[name], process.stdout)


if __name__ == "__main__":
    absltest.main()
