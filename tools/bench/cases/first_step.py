"""The first-step case: build, compile and first jit step of deep stacks."""

import gc
import time

import tfreg
from tfreg import _keras
from tools.bench.harness import (
    Case, Limit, median, print_rows, rotated, round_ratios, Target)
from tools.bench.workloads import deep, NOISE, train_step
from tools.bench.writer import table

keras = _keras.keras


FIRST_STEP_BOUND = 1.5


def run_first_step(settings):
    depths = settings.pick(full=(16, 32, 64, 128), quick=(32,), tiny=(2,))
    rounds = settings.rounds(full=3, quick=1)
    rows = []
    for depth in depths:
        contenders = {
            "none": None,
            "keras L2": keras.regularizers.L2(0.01),
            "tfreg L2": tfreg.L2(0.01),
            "tfreg StudentT": tfreg.priors.StudentT(3.0),
        }
        times = {name: [] for name in contenders}
        for index in range(rounds):
            for name in rotated(list(contenders), index):
                keras.backend.clear_session()
                gc.collect()  # the previous models' garbage, not this one's
                start = time.perf_counter()
                train_step(lambda r, d=depth: deep(r, settings, depth=d),
                            contenders[name], True)
                times[name].append(time.perf_counter() - start)
        none = times["none"]
        for name, samples in times.items():
            ratios = round_ratios(samples, none)
            rows.append({
                "depth": depth, "contender": name,
                "median_s": median(samples), "vs_none": median(ratios),
                "rounds_s": samples, "rounds_vs_none": ratios,
            })
        print_rows(rows[-len(contenders):], ("depth", "contender", "median_s",
                                             "vs_none"))
    keras.backend.clear_session()
    return rows


def table_first_step(rows):
    return ("Seconds to build, compile and run the first `train_on_batch` "
            "(jit) of a Dense stack (width 32) with the regularizer on every "
            "layer; `x none` is the median per-round ratio.\n\n"
            + table(rows, (
                ("depth", "depth"), ("contender", "contender"),
                ("s", "median_s"), ("x none", "vs_none"),
                ("x none per round", lambda r: " ".join(
                    f"{x:.2f}" for x in r["rounds_vs_none"])))))


def _goal_first_step(depth):
    return (f"first jit step, {depth}-layer stack: <= {FIRST_STEP_BOUND}x "
            "no regularizer")


def targets_first_step(rows, settings):
    del settings
    deepest = max((row["depth"] for row in rows), default=None)
    return [Target(_goal_first_step(deepest), row["contender"], "",
                   row["vs_none"], row["vs_none"] <= FIRST_STEP_BOUND)
            for row in rows
            if row["contender"].startswith("tfreg")
            and row["depth"] == deepest]


FIRST_STEP = Case(
    name="first_step",
    title="Time to the first step",
    about="build + compile + first `train_on_batch` (jit) of Dense stacks "
          "of several depths with L2 (Keras', tfreg's) or tfreg's "
          "StudentT(3) prior on every layer, against none; the target is "
          "set at depth 128 (the full run).",
    run=run_first_step,
    table=table_first_step,
    targets=targets_first_step,
    limits={"first jit step": (Limit("Per-kernel tracing and compiling", (
        "Per kernel, what is left is Keras' own handling of each penalty (a "
        "sum and a cast per loss and their gradients, the same for every "
        "regularizer: compare Keras' L2), a call of the shared penalty "
        "function (equal penalties on weights of one shape are traced once "
        "per graph) and of its gradient, and XLA's compile of the inlined "
        "logs. Below that would take one model-level penalty over all "
        "kernels, outside the per-layer API.")), NOISE)})
