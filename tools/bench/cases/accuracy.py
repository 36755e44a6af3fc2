"""The accuracy case: large float32 sums under XLA against float64."""

import numpy as np
import tensorflow as tf

import tfreg
from tools.bench.harness import (
    Case, find, interleave, median, print_rows, size_name, Target)
from tools.bench.workloads import (
    GOAL_NOT_SLOWER, penalty_contenders, value_and_gradient)


def _accuracy_contenders():
    """Name -> regularizer: tfreg's classes whose sums differ in form, and
    Keras' own L1, L2 and L1L2 (a plain reduce_sum under XLA)."""
    contenders = {}
    for name, (theirs, ours) in penalty_contenders().items():
        contenders[f"keras {name}"] = theirs
        contenders[f"tfreg {name}"] = ours
    for name in ("Normal", "StudentT", "Horseshoe", "SpikeAndSlab"):
        contenders[f"tfreg {name}"] = getattr(tfreg.priors, name)()
    contenders["tfreg GroupLasso"] = tfreg.GroupLasso(0.01)
    return contenders


def run_accuracy(settings):
    sizes = settings.pick(full=(1 << 20, 1 << 24, 1 << 26),
                          quick=(1 << 20, 1 << 24), tiny=(1 << 19,))
    rounds = settings.rounds(full=7, quick=5, tiny=1)
    rows = []
    for size in sizes:
        x32 = tf.constant(np.random.default_rng(3).normal(
            0.0, 0.05, size=(size // 64, 64)).astype(np.float32))
        x64 = tf.cast(x32, tf.float64)
        contenders, errors = {}, {}
        for name, regularizer in _accuracy_contenders().items():
            xla = tf.function(value_and_gradient, jit_compile=True)
            value = float(xla(regularizer, x32)[0])
            # The same math in float64 outside XLA (a tree-shaped sum), with
            # tfreg's class for Keras' own (Keras 3 computes in float32).
            twin = (_accuracy_contenders()[name.replace("keras", "tfreg")]
                    if name.startswith("keras") else regularizer)
            exact = float(twin(x64))
            errors[name] = (value - exact) / abs(exact)
            contenders[name] = (lambda f=xla, r=regularizer:
                                f(r, x32)[0].numpy())
        times = interleave(contenders, rounds, warmup=1)
        first = len(rows)
        for name, samples in times.items():
            rows.append({"elements": size, "contender": name,
                         "relative_error": errors[name],
                         "median_ms": 1e3 * median(samples)})
        print_rows(rows[first:], ("elements", "contender", "relative_error",
                                  "median_ms"))
    return rows


def table_accuracy(rows):
    sizes = sorted({row["elements"] for row in rows})
    names = list(dict.fromkeys(row["contender"] for row in rows))
    lines = ["Under `jit_compile=True`, float32 weights N(0, 0.05) of shape "
             "(n / 64, 64): the value's error relative to the same math in "
             "float64 outside XLA, and the median time of value+gradient.",
             "",
             "| contender | " + " | ".join(
                 f"{size_name(s)} error | {size_name(s)} ms" for s in sizes) + " |",
             "|---|" + "---:|---:|" * len(sizes)]
    for name in names:
        cells = []
        for size in sizes:
            row = find(rows, elements=size, contender=name)[0]
            cells += [f"{row['relative_error']:+.1e}",
                      f"{row['median_ms']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


ACCURACY_BOUND = 1e-5
_GOAL_ACCURACY = f"XLA value within {ACCURACY_BOUND:g} of float64"


def targets_accuracy(rows, settings):
    """The worst tfreg class at each size, and each twin at the largest."""
    del settings
    out = []
    sizes = sorted({row["elements"] for row in rows})
    for size in sizes:
        ours = [row for row in rows if row["elements"] == size
                and row["contender"].startswith("tfreg")]
        error = max(abs(row["relative_error"]) for row in ours)
        out.append(Target(_GOAL_ACCURACY,
                          f"worst of {len(ours)} tfreg classes",
                          size_name(size), error, error <= ACCURACY_BOUND))
    for row in find(rows, elements=sizes[-1]):
        twin = find(rows, elements=sizes[-1], contender=row["contender"]
                     .replace("tfreg", "keras"))
        if row["contender"].startswith("tfreg") and twin:
            ratio = twin[0]["median_ms"] / row["median_ms"]
            out.append(Target(GOAL_NOT_SLOWER, f"{row['contender']} XLA "
                              "value+grad", size_name(sizes[-1]), ratio,
                              ratio >= 1.0))
    return out


ACCURACY_CASE = Case(
    name="accuracy",
    title="Accuracy of large sums under XLA",
    about="the value of each penalty on one large float32 tensor under "
          "jit_compile against float64, with its time, beside Keras' own "
          "L1, L2 and L1L2: XLA:CPU's reduction of a large tensor keeps a "
          "running sum per lane; tfreg sums rows of 1024 by a matrix-vector "
          "product with ones (`penalties.total`).",
    run=run_accuracy,
    table=table_accuracy,
    targets=targets_accuracy)
