"""Benchmark harness for tfreg: runs the cases and writes BENCHMARKS.md.

A harness, not a test. Every case runs its contenders interleaved in one
process (A B C, B C A, C A B, ...: the order rotates every round) after a
warm-up, and states ratios as the median of per-round ratios, so that a
noisy machine shifts all contenders alike. The run records the machine
(CPU, versions, `TF_CPU_ALLOCATOR_USE_BFC`, load average before and after,
peak memory) and writes the whole of BENCHMARKS.md from this one run: how
to run it, the machine, the targets with their verdicts, what limits the
unmet ones, and one table per case.

Usage:
  python tools/bench.py --quick --write BENCHMARKS.md   # < 3 minutes
  python tools/bench.py --write BENCHMARKS.md           # full run
  python tools/bench.py --cases penalty,priors --json out.json
  python tools/bench.py --tiny      # smoke run of every case in seconds;
                                    # its numbers mean nothing
  python tools/bench.py --from-json out.json --write BENCHMARKS.md
                                    # the document of a saved run

Adding a case (the extension point): write `run(settings) -> list[dict]`,
one dict of plain JSON values per measured row, and append a `Case` to
`CASES`:

  Case(name="my_case", title="...", about="one sentence for the document",
       run=_run_my_case,                   # settings -> rows
       table=_my_table,                    # rows -> Markdown (see `table`)
       targets=_my_targets,                # (rows, settings) -> [Target]
       limits={"<a Target.goal, or its beginning>": (Limit(...), ...)})

`run` reads its sizes through `settings.pick(full=..., quick=..., tiny=...)`
(quick defaults to full, tiny to quick) and its rounds through
`settings.rounds(full=..., quick=..., tiny=...)` (`--rounds` overrides),
times contenders with `interleave` and compares them with `round_ratios`.
Each `Target` is one number with its verdict; targets of one goal and
subject that differ only in their condition (size, mode) share a row of
the case's targets table. A `Limit` is a titled paragraph on what bounds a
target; the document prints each one once, under the unmet targets that
name it. `tests/bench_test.py` runs every case in `CASES` at `--tiny` scale.
"""

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

import tfreg  # pylint: disable=g-import-not-at-top
from tfreg import _keras  # pylint: disable=g-import-not-at-top

keras = _keras.keras

SCALES = ("full", "quick", "tiny")
QUICK_SECONDS = 180  # `--quick` must finish within this (a target).


@dataclasses.dataclass(frozen=True)
class Settings:
    """The scale of one run; every case picks its own sizes from it."""

    scale: str = "full"
    rounds_override: int | None = None

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"Invalid value for argument `scale`. Expected "
                             f"one of {SCALES}. Received: scale={self.scale}")

    def pick(self, full, quick=None, tiny=None):
        """`full`, `quick` or `tiny` by scale (quick defaults to full, tiny to quick)."""
        quick = full if quick is None else quick
        tiny = quick if tiny is None else tiny
        return {"full": full, "quick": quick, "tiny": tiny}[self.scale]

    def rounds(self, full, quick=None, tiny=1):
        """Timed rounds: `--rounds` if given, else picked by scale."""
        if self.rounds_override is not None:
            return self.rounds_override
        return self.pick(full, quick, tiny)


@dataclasses.dataclass(frozen=True)
class Target:
    """One measured number against a bound, e.g. 0.93 >= 0.70.

    `goal` states the target (it groups rows and keys `Case.limits`),
    `subject` what was measured, `condition` where (size, mode; "" if the
    goal says it all).
    """

    goal: str
    subject: str
    condition: str
    measured: float
    met: bool
    case: str = ""


@dataclasses.dataclass(frozen=True)
class Limit:
    """What bounds a target on this machine: a short title and a paragraph."""

    title: str
    text: str


@dataclasses.dataclass(frozen=True)
class Case:
    """A benchmark case: how it runs, how it reads, what it must meet.

    `limits` maps a target's goal (or the beginning of it) to the `Limit`s
    that bound it; the document prints them when that goal has an unmet
    target.
    """

    name: str
    title: str
    about: str
    run: Callable[[Settings], list]
    table: Callable[[list], str]
    targets: Callable[[list, Settings], list] = lambda rows, settings: []
    limits: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- timing --

def interleave(contenders, rounds, warmup=1, repeat=1):
    """Times each contender `repeat` calls per round: A B C, B C A, C A B, ...

    The order rotates every round, so no contender always runs first (after
    the previous round's last) or last.

    Args:
      contenders: dict name -> zero-argument callable that blocks until done.
      rounds: number of timed rounds.
      warmup: untimed rounds first.
      repeat: calls per timed sample.

    Returns:
      dict name -> list of per-call seconds, one per round.
    """
    for _ in range(warmup):
        for run in contenders.values():
            run()
    times = {name: [] for name in contenders}
    for index in range(rounds):
        for name in _rotated(list(contenders), index):
            run = contenders[name]
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            times[name].append((time.perf_counter() - start) / repeat)
    return times


def page_faults_per_call(run, calls=3):
    """Minor page faults of the process per call of `run` (after it ran once).

    Fresh pages touched for the first time: with TF's default CPU allocator,
    XLA temporaries above glibc's 32 MB mmap threshold can be mapped and
    faulted in anew on every call (docs/performance.md).
    """
    run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def _rotated(names, by):
    by %= len(names)
    return names[by:] + names[:by]


def median(values):
    return statistics.median(values)


def round_ratios(numerator, denominator):
    return [a / b for a, b in zip(numerator, denominator)]


def _rounds_within(contenders, rounds, repeat, seconds, most=1000):
    """`rounds`, or as many more as fit in `seconds`, at most `most`.

    Times one round, the second: a contender's first call may retrace.
    """
    for _ in range(2):
        start = time.perf_counter()
        for run in contenders.values():
            for _ in range(repeat):
                run()
    fit = int(seconds / max(time.perf_counter() - start, 1e-9))
    return max(rounds, min(fit, most))


def _mode(jit):
    return "XLA" if jit else "graph"


def _size(params):
    """4000000 -> '4M', 20000 -> '20K'."""
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if params >= scale:
            return f"{params / scale:.0f}{unit}"
    return str(params)


# ---------------------------------------------------------------- penalty --

def _weights(num_params, num_tensors=50, seed=0):
    """~num_tensors float32 variables totalling ~num_params, kernel-like shapes."""
    rng = np.random.default_rng(seed)
    shares = rng.integers(1, 100, size=num_tensors).astype(float)
    sizes = (shares / shares.sum() * num_params).astype(int)
    variables = []
    for index, size in enumerate(sizes):
        if index % 5 == 4:  # a Conv2D kernel (3, 3, in, out)
            out = min(128, max(1, size // 9))
            shape = (3, 3, max(1, size // (9 * out)), out)
        else:
            out = min(256, max(1, size))
            shape = (max(1, size // out), out)
        variables.append(tf.Variable(
            rng.normal(0.0, 0.05, size=shape).astype(np.float32)))
    return variables


def _penalty_fn(variables, penalty, gradient, jit):
    """A tf.function over the captured variables (never passed as arguments:
    a variable list as an argument costs call time per variable)."""
    if gradient:
        def run():
            with tf.GradientTape() as tape:
                value = tf.add_n([penalty(v) for v in variables])
            return value, tape.gradient(value, variables)
    else:
        def run():
            return tf.add_n([penalty(v) for v in variables])
    function = tf.function(run, jit_compile=jit)

    def call():
        result = function()
        (result[0] if gradient else result).numpy()
    return call


def _read_floor(v):
    return tf.reduce_sum(v)


def penalty_contenders():
    """Name -> (Keras' own, tfreg's), same math."""
    return {
        "L1": (keras.regularizers.L1(0.01), tfreg.L1(0.01)),
        "L2": (keras.regularizers.L2(0.01), tfreg.L2(0.01)),
        "L1L2": (keras.regularizers.L1L2(0.01, 0.01), tfreg.L1L2(0.01, 0.01)),
    }


PRIORS = ("Normal", "Laplace", "StudentT", "Cauchy", "Horseshoe",
          "SpikeAndSlab")


def closed_form_priors():
    """Name -> every closed-form prior of tfreg.priors, default arguments."""
    return {name: getattr(tfreg.priors, name)() for name in PRIORS}


def run_penalty(settings):
    sizes = settings.pick(full=(4_000_000, 16_000_000, 64_000_000),
                          quick=(4_000_000,), tiny=(20_000,))
    num_tensors = settings.pick(full=50, tiny=2)
    # Quick runs leave the priors to their own case (time).
    with_priors = settings.pick(full=True, quick=False)
    # A call takes milliseconds at the quick size: rounds are cheap there,
    # compiling the contenders is not.
    rounds = settings.rounds(full=7, quick=11)
    rows = []
    for num_params in sizes:
        variables = _weights(num_params, num_tensors)
        params = sum(v.shape.num_elements() for v in variables)
        regularizers = {}
        for name, (theirs, ours) in penalty_contenders().items():
            regularizers[f"keras {name}"] = theirs
            regularizers[f"tfreg {name}"] = ours
        if with_priors:
            for name, prior in closed_form_priors().items():
                regularizers[f"tfreg {name}"] = prior
        for jit in (False, True):
            for gradient in (False, True):
                contenders = {"read floor": _penalty_fn(
                    variables, _read_floor, False, jit)}
                for name, regularizer in regularizers.items():
                    contenders[name] = _penalty_fn(
                        variables, regularizer, gradient, jit)
                times = interleave(contenders, rounds, warmup=2)
                floor = times["read floor"]
                first = len(rows)
                for name, samples in times.items():
                    if name == "read floor" and gradient:
                        continue
                    rows.append({
                        "params": params, "tensors": len(variables),
                        "mode": _mode(jit),
                        "what": "value+grad" if gradient else "value",
                        "contender": name,
                        "median_ms": 1e3 * median(samples),
                        "gb_per_s": 4 * params / median(samples) / 1e9,
                        "floor_fraction": median(round_ratios(floor, samples)),
                        "page_faults": page_faults_per_call(contenders[name]),
                    })
                print_rows(rows[first:], ("params", "mode", "what",
                                          "contender", "gb_per_s",
                                          "floor_fraction"))
    return rows


def _penalty_columns(rows):
    """(mode, what) pairs present, graph first."""
    return sorted({(r["mode"], r["what"]) for r in rows},
                  key=lambda c: (c[0] != "graph", c[1] != "value"))


def table_penalty(rows):
    columns = _penalty_columns(rows)
    lines = []
    floors = [r for r in rows if r["contender"] == "read floor"]
    lines.append("Read floor (`reduce_sum` of the same variables): " + "; ".join(
        f"{_size(r['params'])} {r['mode']} {r['gb_per_s']:.1f} GB/s"
        for r in floors) + ". Cells: floor fraction (median per-round "
        "ratio of the floor's time to the contender's).")
    lines.append("")
    table_rows = []
    for params in sorted({r["params"] for r in rows}):
        names = list(dict.fromkeys(r["contender"] for r in rows
                                   if r["params"] == params
                                   and r["contender"] != "read floor"))
        for name in names:
            cells = {"params": _size(params), "contender": name}
            faults = 0.0
            for mode, what in columns:
                match = _find(rows, params=params, contender=name, mode=mode,
                              what=what)
                cells[f"{mode} {what}"] = (match[0]["floor_fraction"]
                                           if match else "")
                if match and mode == "XLA":
                    faults = max(faults, match[0]["page_faults"])
            cells["faults"] = faults
            table_rows.append(cells)
    lines.append(table(table_rows, [("params", "params"),
                                    ("contender", "contender")]
                       + [(f"{m} {w}", f"{m} {w}") for m, w in columns]
                       + [("XLA page faults/call", "faults")]))
    return "\n".join(lines)


VALUE_FLOOR, GRADIENT_FLOOR = 0.70, 0.40
_GOAL_VALUE = f"value >= {VALUE_FLOOR:.2f} of the read floor"
_GOAL_GRADIENT = f"value+grad >= {GRADIENT_FLOOR:.2f} of the read floor"
_GOAL_NOT_SLOWER = "not slower than Keras' same math (Keras time / tfreg time >= 1)"


def targets_penalty(rows, settings):
    del settings
    out = []
    for row in rows:
        name = row["contender"]
        if not name.startswith("tfreg"):
            continue
        condition = f"{_size(row['params'])} {row['mode']}"
        goal, bound = ((_GOAL_VALUE, VALUE_FLOOR) if row["what"] == "value"
                       else (_GOAL_GRADIENT, GRADIENT_FLOOR))
        out.append(Target(goal, name, condition, row["floor_fraction"],
                          row["floor_fraction"] >= bound))
    for row in rows:
        name = row["contender"]
        if not name.startswith("tfreg"):
            continue
        twin = _find(rows, contender="keras" + name[len("tfreg"):],
                     mode=row["mode"], what=row["what"], params=row["params"])
        if twin:
            ratio = twin[0]["median_ms"] / row["median_ms"]
            out.append(Target(_GOAL_NOT_SLOWER, f"{name} {row['what']}",
                              f"{_size(row['params'])} {row['mode']}", ratio,
                              ratio >= 1.0))
    return out


LOGS = Limit("Logarithms and exponentials on CPU", (
    "A log prior pays a logarithm per weight (Horseshoe and SpikeAndSlab "
    "also exponentials), which costs more than reading the weight. In graph "
    "mode every op is a pass over the weights (Eigen). Student-t and Cauchy "
    "take one log1p per weight; SpikeAndSlab needs an "
    "exp and a log per weight; Horseshoe takes two exps, four logs, a square root and "
    "four divisions per weight. The decoupled update of "
    "`tfreg.optimizers.Regularized` needs only the gradient, which for "
    "Normal, Laplace, Student-t, Cauchy and SpikeAndSlab takes no log."))
XLA_WRITES = Limit("XLA:CPU writes the summed terms out", (
    "From 512K elements the terms (`x^2`, `|x|`) are summed as rows of 1024 "
    "by a matrix-vector product with ones (`penalties.total`): XLA:CPU's "
    "own reduction of a large tensor keeps one running accumulator per "
    "lane and loses up to 1e-3 relative at 64M elements. With TF's default CPU allocator, "
    "temporaries above 32 MB can be page-faulted in on every call (the "
    "page-fault column; `TF_CPU_ALLOCATOR_USE_BFC=true`, "
    "docs/performance.md)."))
GRAPH_ABS = Limit("Graph mode, L1 and L1L2", (
    "`reduce_sum(abs(x))` writes `|x|` out before summing (one pass per "
    "op), so L1 and L1L2 read their weights twice; summing cache-sized "
    "slices helps the value only, costs ops per 64K elements, and was not "
    "adopted."))
GRADIENT = Limit("The gradient's own traffic", (
    "Value+gradient adds a read and a write of every weight: its floor is "
    "about 0.5 of the read floor."))
ACCURATE_SUMS = Limit("Accurate sums under XLA", (
    "Below 512K elements per weight tfreg's L1, L2 and L1L2 compile under "
    "XLA to about the same program as Keras' own (a plain sum fused with "
    "the step), so their ratio is 1 within noise. A faster XLA:CPU "
    "reduction (an operand ending in a max, summed by its library "
    "reduction) errs by up to 1e-3 relative at 64M elements and is not "
    "used; from 512K elements the row sums of `penalties.total` are both "
    "accurate and faster than Keras' (the accuracy case)."))
NOISE = Limit("Noise", (
    "Ratios of calls a few milliseconds long, and differences of two step "
    "times, move between runs by more than some gaps to their lines; L1 "
    "under XLA compiles to the same optimized program as Keras' L1, so its "
    "ratio is 1 within that noise. Compare the control column and rerun "
    "with more `--rounds`."))

PENALTY = Case(
    name="penalty",
    title="Penalty throughput",
    about="GB/s of weights (float32, Dense- and Conv-shaped tensors) for a "
          "penalty's value and its value+gradient (tape), Keras' own and "
          "tfreg's, against a read-only floor (`reduce_sum` of the same "
          "variables) timed in the same rounds; graph mode and XLA.",
    run=run_penalty,
    table=table_penalty,
    targets=targets_penalty,
    limits={
        _GOAL_VALUE: (GRAPH_ABS, XLA_WRITES, LOGS),
        _GOAL_GRADIENT: (GRADIENT, XLA_WRITES, LOGS),
        _GOAL_NOT_SLOWER: (NOISE, ACCURATE_SUMS),
    })


# ----------------------------------------------------------------- priors --

def tfp_twins():
    """Name -> zero-argument factory of the TFP distribution of each prior."""
    import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
    tfd = tfp.distributions
    return {
        "Normal": lambda: tfd.Normal(0.0, 1.0),
        "Laplace": lambda: tfd.Laplace(0.0, 1.0),
        "StudentT": lambda: tfd.StudentT(3.0, 0.0, 1.0),
        "Cauchy": lambda: tfd.Cauchy(0.0, 1.0),
        "Horseshoe": lambda: tfd.Horseshoe(1.0),
        "SpikeAndSlab": lambda: tfd.MixtureSameFamily(
            tfd.Categorical(probs=[0.5, 0.5]), tfd.Normal(0.0, [1.0, 0.01])),
    }


def run_priors(settings):
    num_params = settings.pick(full=16_000_000, quick=1_000_000, tiny=10_000)
    # Compiling 16 contenders x 50 tensors under XLA takes minutes.
    num_tensors = settings.pick(full=50, quick=10, tiny=2)
    rounds = settings.rounds(full=7, quick=11)
    variables = _weights(num_params, num_tensors=num_tensors, seed=1)
    params = sum(v.shape.num_elements() for v in variables)
    twins = tfp_twins()
    rows = []
    # At tiny scale graph mode only: XLA compiles of 15 contenders take long.
    for jit in settings.pick(full=(False, True), tiny=(False,)):
        contenders = {"tfreg L2": _penalty_fn(variables, tfreg.L2(0.01), True,
                                              jit)}
        for name, prior in closed_form_priors().items():
            contenders[f"tfreg {name}"] = _penalty_fn(variables, prior, True,
                                                      jit)
            distribution = twins[name]()
            contenders[f"tfp {name}"] = _penalty_fn(
                variables,
                lambda v, d=distribution: -tf.reduce_sum(d.log_prob(v)),
                True, jit)
        contenders["tfreg Prior(tfd.Normal)"] = _penalty_fn(
            variables, tfreg.priors.Prior(twins["Normal"]()), True, jit)
        # What one log per weight costs, value only.
        contenders["sum(log1p(w^2)), value only"] = _penalty_fn(
            variables, lambda v: tf.reduce_sum(tf.math.log1p(tf.square(v))),
            False, jit)
        times = interleave(contenders, rounds, warmup=2)
        base = times["tfreg L2"]
        for name, samples in times.items():
            rows.append({
                "params": params, "tensors": len(variables),
                "mode": _mode(jit), "contender": name,
                "median_ms": 1e3 * median(samples),
                "vs_tfreg_l2": median(round_ratios(samples, base)),
                "page_faults": page_faults_per_call(contenders[name]),
            })
        print_rows(rows[-len(times):], ("mode", "contender", "median_ms",
                                        "vs_tfreg_l2"))
    return rows


def table_priors(rows):
    if not rows:
        return ""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    table_rows = []
    for name in dict.fromkeys(r["contender"] for r in rows):
        cells = {"contender": name}
        for mode in modes:
            match = _find(rows, contender=name, mode=mode)
            cells[f"{mode} ms"] = match[0]["median_ms"] if match else ""
            cells[f"{mode} x"] = match[0]["vs_tfreg_l2"] if match else ""
        table_rows.append(cells)
    return (f"{_size(rows[0]['params'])} params in {rows[0]['tensors']} "
            "tensors, value+gradient; `x L2` is the median per-round ratio "
            "to tfreg L2.\n\n"
            + table(table_rows, [("contender", "contender")] + [
                column for mode in modes for column in (
                    (f"{mode} ms", f"{mode} ms"),
                    (f"{mode} x L2", f"{mode} x"))]))


PRIOR_BOUND = 1.3


def _goal_priors(rows):
    return (f"value+grad <= {PRIOR_BOUND}x tfreg L2's "
            f"({_size(rows[0]['params'])} params)") if rows else ""


def targets_priors(rows, settings):
    del settings
    goal = _goal_priors(rows)
    return [Target(goal, row["contender"], row["mode"], row["vs_tfreg_l2"],
                   row["vs_tfreg_l2"] <= PRIOR_BOUND)
            for row in rows
            if row["contender"].startswith("tfreg ")
            and row["contender"] != "tfreg L2"]


PRIORS_CASE = Case(
    name="priors",
    title="Priors, value+gradient",
    about="every closed-form prior of `tfreg.priors`, TFP's `log_prob` of "
          "the same distribution and `priors.Prior(tfd.Normal)` against "
          "tfreg's L2 on the same weights (value+gradient), and what one "
          "`log1p` per weight costs (value only).",
    run=run_priors,
    table=table_priors,
    targets=targets_priors,
    limits={f"value+grad <= {PRIOR_BOUND}x tfreg L2's": (LOGS,)})


# ----------------------------------------------------------------- memory --

def _memory_contenders(rows):
    """Class name -> (regularizer, float32 weight) with `rows` x 64 elements.

    Kernels are (rows, 64); Orthogonal(mode="rows") takes (64, rows) (a
    Gram matrix of its rows), MeanFieldKL (2, rows / 2, 64), the activity
    penalties (batch, features) = (rows, 64), KLSparsity's in (0, 1).
    """
    import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(2)

    def weight(shape, low=None):
        values = (rng.uniform(0.05, 0.95, size=shape) if low
                  else rng.normal(0.0, 0.05, size=shape))
        return tf.constant(values.astype(np.float32))

    kernel = (rows, 64)
    reference = np.zeros(kernel, np.float32)
    return {
        "L1": (tfreg.L1(0.01), weight(kernel)),
        "L2": (tfreg.L2(0.01), weight(kernel)),
        "L1L2": (tfreg.L1L2(0.01, 0.01), weight(kernel)),
        "L2SP": (tfreg.L2SP(0.01, reference=reference), weight(kernel)),
        "Orthogonal rows": (tfreg.Orthogonal(0.01), weight((64, rows))),
        "Orthogonal columns": (tfreg.Orthogonal(0.01, mode="columns"),
                               weight(kernel)),
        "GroupLasso": (tfreg.GroupLasso(0.01), weight(kernel)),
        "SparseGroupLasso": (tfreg.SparseGroupLasso(0.01, 0.01),
                             weight(kernel)),
        "SoftOrthogonal": (tfreg.SoftOrthogonal(0.01), weight(kernel)),
        "SpectralNorm": (tfreg.SpectralNorm(0.01), weight(kernel)),
        "SRIP": (tfreg.SRIP(0.01), weight(kernel)),
        "NuclearNorm": (tfreg.NuclearNorm(0.01), weight(kernel)),
        "DeCov": (tfreg.DeCov(0.01), weight(kernel)),
        "KLSparsity": (tfreg.KLSparsity(0.01), weight(kernel, low=True)),
        **{name: (prior, weight(kernel))
           for name, prior in closed_form_priors().items()},
        "MeanFieldKL": (tfreg.priors.MeanFieldKL(1.0),
                        weight((2, rows // 2, 64))),
        "Prior(tfd.Gumbel)": (tfreg.priors.Prior(
            tfp.distributions.Gumbel(0.0, 1.0)), weight(kernel)),
    }


MEMORY_MODES = ("eager tape", "eager value", "tf.function", "jit")


def run_memory(settings):
    from tools import memory  # pylint: disable=g-import-not-at-top
    rows_of = settings.pick(full=1 << 18, quick=1 << 16, tiny=1 << 10)
    contenders = _memory_contenders(rows_of)
    # Compiling every class takes a minute: a smoke run measures two.
    names = settings.pick(full=list(contenders), tiny=["L2", "Horseshoe"])
    out = []
    for name in names:
        regularizer, x = contenders[name]
        graph = tf.function(_value_and_gradient)
        xla = tf.function(_value_and_gradient, jit_compile=True)
        calls = {
            "eager tape": lambda r=regularizer, x=x: _value_and_gradient(r, x),
            "eager value": lambda r=regularizer, x=x: r(x),
            "tf.function": lambda r=regularizer, x=x, f=graph: f(r, x),
            "jit": lambda r=regularizer, x=x, f=xla: f(r, x),
        }
        nbytes = 4 * x.shape.num_elements()
        row = {"contender": name, "elements": x.shape.num_elements(),
               "bound": memory.bound(regularizer)}
        for mode in MEMORY_MODES:
            row[mode] = memory.peak_extra_ratio(calls[mode], nbytes)
        out.append(row)
        print_rows([row], ("contender", "elements") + MEMORY_MODES)
    return out


def _value_and_gradient(regularizer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = regularizer(x)
    return value, tape.gradient(value, x)


def table_memory(rows):
    """One row per mode, one column per class (the document stays short)."""
    if not rows:
        return ""
    names = [row["contender"] for row in rows]
    by_mode = [dict({"mode": mode}, **{row["contender"]: row[mode]
                                        for row in rows})
               for mode in MEMORY_MODES]
    return (f"{_size(rows[0]['elements'])} float32 elements; cells: peak "
            "extra memory of one call (the gradient it returns included) "
            "over the weight's bytes.\n\n"
            + table(by_mode, [("mode", "mode")]
                    + [(name, name) for name in names]))


_GOAL_MEMORY = "peak extra memory <= its bound x the weight's bytes"


def targets_memory(rows, settings):
    """The worst class of each bound (tools/memory.py), over every mode."""
    del settings
    out = []
    for bound in sorted({row["bound"] for row in rows}):
        worst = max((row for row in rows if row["bound"] == bound),
                    key=lambda row: max(row[mode] for mode in MEMORY_MODES))
        measured = max(worst[mode] for mode in MEMORY_MODES)
        out.append(Target(f"{_GOAL_MEMORY} ({bound:g})",
                          f"worst: {worst['contender']}",
                          _size(worst["elements"]), measured,
                          measured <= bound))
    return out


MEMORY_LIMITS = Limit("Memory at small sizes", (
    "The priors of `tfreg.priors` go by blocks of 1M elements (Horseshoe: "
    "512K) above that size; a smaller tensor keeps its whole chain of "
    "intermediates, so its multiple is larger (Horseshoe: 17x, under "
    "40 MB), and the blocks' own weigh more on a few million elements. "
    "MeanFieldKL differentiates "
    "through its softplus by autodiff. Orthogonal(mode=\"rows\") needs a "
    "rows x rows Gram matrix, 64 x 64 here."))

MEMORY_CASE = Case(
    name="memory",
    title="Peak memory",
    about="peak extra memory of every regularizer class on one large "
          "float32 tensor in eager mode (value+gradient with a tape, value "
          "only), tf.function and jit_compile (value+gradient), as a "
          "multiple of the weight's bytes (`tools/memory.py`: TF's CPU "
          "allocator peak, and the resident-set peak).",
    run=run_memory,
    table=table_memory,
    targets=targets_memory,
    limits={_GOAL_MEMORY: (MEMORY_LIMITS,)})


# ---------------------------------------------------------------- accuracy --

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
            xla = tf.function(_value_and_gradient, jit_compile=True)
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
                 f"{_size(s)} error | {_size(s)} ms" for s in sizes) + " |",
             "|---|" + "---:|---:|" * len(sizes)]
    for name in names:
        cells = []
        for size in sizes:
            row = _find(rows, elements=size, contender=name)[0]
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
                          _size(size), error, error <= ACCURACY_BOUND))
    for row in _find(rows, elements=sizes[-1]):
        twin = _find(rows, elements=sizes[-1], contender=row["contender"]
                     .replace("tfreg", "keras"))
        if row["contender"].startswith("tfreg") and twin:
            ratio = twin[0]["median_ms"] / row["median_ms"]
            out.append(Target(_GOAL_NOT_SLOWER, f"{row['contender']} XLA "
                              "value+grad", _size(sizes[-1]), ratio,
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


# ------------------------------------------------------------- train step --

def _mlp(regularizer, settings, batch=128):
    """784-1024-1024-1024-10 (tiny: 784-16-10); (model, input shape)."""
    units = settings.pick(full=(1024, 1024, 1024), tiny=(16,))
    inputs = keras.Input((784,))
    x = inputs
    for width in units:
        x = keras.layers.Dense(width, activation="relu",
                               kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (batch, 784)


def _cnn(regularizer, settings):
    filters_per_block = settings.pick(full=(32, 64, 128), tiny=(4,))
    side = settings.pick(full=32, tiny=8)
    inputs = keras.Input((side, side, 3))
    x = inputs
    for filters in filters_per_block:
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                kernel_regularizer=regularizer)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(settings.pick(full=256, tiny=8), activation="relu",
                           kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (64, side, side, 3)


def _deep(regularizer, settings, depth=None, units=32):
    depth = depth or settings.pick(full=128, tiny=3)
    inputs = keras.Input((units,))
    x = inputs
    for _ in range(depth):
        x = keras.layers.Dense(units, activation="relu",
                               kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (64, units)


MODELS = {"mlp": _mlp, "cnn": _cnn, "deep128": _deep}


def _train_step(build, regularizer, jit, seed=0,
                optimizer=lambda model: keras.optimizers.SGD(0.001)):
    """A compiled model's `train_on_batch` on a fixed batch, called once;
    the model is compiled with `optimizer(model)`."""
    keras.utils.set_random_seed(seed)
    model, input_shape = build(regularizer)
    model.compile(optimizer=optimizer(model),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True),
                  jit_compile=jit)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=input_shape).astype(np.float32)
    y = rng.integers(0, 10, size=(input_shape[0],)).astype(np.int32)
    model.train_on_batch(x, y)
    return lambda: model.train_on_batch(x, y)


def _penalty_alone(model, theirs, ours, jit, rounds, repeat):
    """Value+gradient of the penalty on the model's kernel shapes, no model:
    what the regularizer adds to a step, without the step's own noise."""
    rng = np.random.default_rng(0)
    variables = [tf.Variable(rng.normal(0.0, 0.05, v.shape).astype(np.float32))
                 for v in model.trainable_weights if "kernel" in v.name]
    times = interleave({"keras": _penalty_fn(variables, theirs, True, jit),
                        "tfreg": _penalty_fn(variables, ours, True, jit)},
                       rounds, warmup=2, repeat=repeat)
    return {"keras_penalty_ms": 1e3 * median(times["keras"]),
            "tfreg_penalty_ms": 1e3 * median(times["tfreg"]),
            "penalty_ratio": median(round_ratios(times["tfreg"],
                                                 times["keras"]))}


def run_train_step(settings):
    """Each (model, regularizer, jit) of the plan for at least the case's
    rounds or its time budget per model, whichever gives more rounds: a
    regularizer adds less to a step than the step's time drifts between
    rounds, so short steps get many rounds."""
    quick_plan = (("mlp", "L2", True), ("deep128", "L1L2", False))
    plan = settings.pick(
        full=tuple((m, r, j) for m in MODELS for r in ("L2", "L1L2")
                   for j in (False, True)),
        quick=quick_plan)
    rounds = settings.rounds(full=7, quick=3)
    repeat = settings.pick(full=4, quick=2, tiny=1)
    seconds = settings.pick(full=15, quick=5, tiny=0)
    rows = []
    for model_name, regularizer_name, jit in plan:
        theirs, ours = penalty_contenders()[regularizer_name]

        def build(regularizer, model_name=model_name):
            return MODELS[model_name](regularizer, settings)
        contenders = {
            "none": _train_step(build, None, jit),
            "keras": _train_step(build, theirs, jit),
            "tfreg": _train_step(build, ours, jit),
            # A second unregularized model with the same weights: its
            # "overhead" is the noise. (Other weights give other step
            # times, so every contender has the same seed.)
            "control": _train_step(build, None, jit),
        }
        # _rounds_within has run every contender for two rounds: the warm-up.
        times = interleave(
            contenders, _rounds_within(contenders, rounds, repeat, seconds),
            warmup=0, repeat=repeat)
        none = times["none"]

        def overhead(name):
            # Median of per-round differences: a round's steps run back to
            # back, so a drift of the machine between rounds cancels.
            return median([a - b for a, b in zip(times[name], none)])
        keras_overhead, tfreg_overhead = overhead("keras"), overhead("tfreg")
        model, _ = build(None)
        row = {
            "model": model_name, "regularizer": regularizer_name, "jit": jit,
            "params": int(model.count_params()), "rounds": len(none),
            "none_ms": 1e3 * median(none),
            "keras_ms": 1e3 * median(times["keras"]),
            "tfreg_ms": 1e3 * median(times["tfreg"]),
            "keras_overhead_ms": 1e3 * keras_overhead,
            "tfreg_overhead_ms": 1e3 * tfreg_overhead,
            "control_overhead_ms": 1e3 * overhead("control"),
            "overhead_ratio": (tfreg_overhead / keras_overhead
                               if keras_overhead > 0 else float("nan")),
        }
        row.update(_penalty_alone(model, theirs, ours, jit, 3 * rounds,
                                  repeat=settings.pick(full=10, tiny=1)))
        rows.append(row)
        print_rows([row], ("model", "regularizer", "jit", "rounds", "none_ms",
                           "keras_ms", "tfreg_ms", "overhead_ratio",
                           "control_overhead_ms", "penalty_ratio"))
        keras.backend.clear_session()
    return rows


def table_train_step(rows):
    return ("ms per `train_on_batch`; overhead = median over rounds of the "
            "step minus the same round's unregularized step; control = a "
            "second unregularized model (the noise of an overhead); penalty "
            "alone = value+gradient on the model's kernel shapes, tfreg / "
            "Keras.\n\n" + table(rows, (
                ("model", "model"), ("params", "params"),
                ("reg", "regularizer"),
                ("jit", lambda r: "yes" if r["jit"] else "no"),
                ("rounds", "rounds"), ("none", "none_ms"),
                ("Keras", "keras_ms"), ("tfreg", "tfreg_ms"),
                ("Keras overhead", "keras_overhead_ms"),
                ("tfreg overhead", "tfreg_overhead_ms"),
                ("control overhead", "control_overhead_ms"),
                ("overhead ratio", "overhead_ratio"),
                ("penalty alone ratio", "penalty_ratio"))))


# (model, regularizer, jit) -> the bound on tfreg's overhead / Keras'.
OVERHEAD_BOUNDS = {("mlp", "L2", True): 0.8, ("deep128", "L1L2", False): 0.6}
_MODEL_NAMES = {"mlp": "MLP", "cnn": "CNN", "deep128": "128-layer stack"}


def _goal_overhead(model, regularizer, jit, bound):
    return (f"train-step overhead, {_MODEL_NAMES[model]}, "
            f"{'jit' if jit else 'no jit'}: tfreg {regularizer} <= "
            f"{bound}x Keras'")


def targets_train_step(rows, settings):
    del settings
    out = []
    for (model, regularizer, jit), bound in OVERHEAD_BOUNDS.items():
        for row in _find(rows, model=model, regularizer=regularizer, jit=jit):
            out.append(Target(_goal_overhead(model, regularizer, jit, bound),
                              f"tfreg {regularizer}", "",
                              row["overhead_ratio"],
                              row["overhead_ratio"] <= bound))
    return out


TRAIN_STEP = Case(
    name="train_step",
    title="Train step",
    about="`train_on_batch` time with no regularizer, Keras' own and "
          "tfreg's (same math) on an MLP (784-1024-1024-1024-10), a CNN and "
          "a stack of 128 Dense layers of width 32; the overhead is a step's "
          "time minus the unregularized step's.",
    run=run_train_step,
    table=table_train_step,
    targets=targets_train_step,
    limits={
        _goal_overhead("mlp", "L2", True, 0.8): (Limit(
            "A read and a read-modify-write per kernel", (
                "What is left of the MLP's overhead is one read of the "
                "kernels for the value and one read-modify-write for the "
                "gradient; less needs the decay folded into the optimizer's "
                "update (`tfreg.optimizers.Regularized`, the optimizer case "
                "below).")), NOISE),
        _goal_overhead("deep128", "L1L2", False, 0.6): (Limit(
            "Ops per variable", (
                "On 129 small kernels the cost is graph ops per variable, "
                "not arithmetic: after grappler tfreg's L1L2 adds 10 ops per "
                "layer to a train step and Keras' 14, 0.71 by op counts "
                "alone (every exact rewrite tried needs as many). One "
                "model-level penalty over all kernels measured no better in "
                "isolation and would give up the per-layer API.")), NOISE),
    })


# ------------------------------------------------------------- first step --

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
            for name in _rotated(list(contenders), index):
                keras.backend.clear_session()
                gc.collect()  # the previous models' garbage, not this one's
                start = time.perf_counter()
                _train_step(lambda r, d=depth: _deep(r, settings, depth=d),
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


# -------------------------------------------------------------- optimizer --

from tfreg import optimizers as tfreg_optimizers  # pylint: disable=g-import-not-at-top,wrong-import-position


def _optimizer_mlp(regularizer, settings):
    """The train-step case's MLP at batch 256."""
    return _mlp(regularizer, settings, batch=256)


def _wrapped(mode, inner, metric="adaptive"):
    return lambda model: tfreg_optimizers.Regularized(
        inner(), mode=mode, model=model, metric=metric)


def _optimizer_plan(settings):
    """(model, jit, inner optimizer, {contender: (regularizer, optimizer)})."""
    adam = lambda: keras.optimizers.Adam(1e-3)
    sgd = lambda: keras.optimizers.SGD(1e-3)
    plain = lambda inner: lambda model: inner()
    mlp = ("mlp", True, {
        "none": (None, plain(adam)),
        "Keras L2 (loss)": (keras.regularizers.L2(1e-4), plain(adam)),
        "Keras AdamW": (None, lambda model: keras.optimizers.AdamW(
            1e-3, weight_decay=2e-4)),
        "tfreg L2 decoupled": (tfreg.L2(1e-4), _wrapped("decoupled", adam)),
        "Keras L1 (loss)": (keras.regularizers.L1(1e-5), plain(adam)),
        "tfreg L1 proximal": (tfreg.L1(1e-5), _wrapped("proximal", adam)),
        "tfreg L1 proximal, scalar metric": (
            tfreg.L1(1e-5), _wrapped("proximal", adam, "scalar")),
        "tfreg GroupLasso proximal": (tfreg.GroupLasso(1e-5),
                                      _wrapped("proximal", adam)),
        "control": (None, plain(adam)),
    })
    deep = ("deep128", False, {
        "none": (None, plain(sgd)),
        "Keras L1L2 (loss)": (keras.regularizers.L1L2(1e-5, 1e-4),
                              plain(sgd)),
        "tfreg L1L2 proximal": (tfreg.L1L2(1e-5, 1e-4),
                                _wrapped("proximal", sgd)),
        "control": (None, plain(sgd)),
    })
    return settings.pick(full=(mlp, deep))


_OPTIMIZER_MODELS = {"mlp": _optimizer_mlp, "deep128": _deep}


def _run_optimizer_steps(settings):
    rounds = settings.rounds(full=7, quick=3)
    repeat = settings.pick(full=4, quick=2, tiny=1)
    seconds = settings.pick(full=15, quick=5, tiny=0)
    rows = []
    for model_name, jit, plan in _optimizer_plan(settings):
        def build(regularizer, model_name=model_name):
            return _OPTIMIZER_MODELS[model_name](regularizer, settings)
        contenders = {name: _train_step(build, regularizer, jit,
                                        optimizer=optimizer)
                      for name, (regularizer, optimizer) in plan.items()}
        times = interleave(
            contenders, _rounds_within(contenders, rounds, repeat, seconds),
            warmup=0, repeat=repeat)
        none = times["none"]
        for name, samples in times.items():
            rows.append({
                "kind": "step", "model": model_name, "jit": jit,
                "contender": name, "rounds": len(none),
                "ms": 1e3 * median(samples),
                "overhead_ms": 1e3 * median(
                    [a - b for a, b in zip(samples, none)]),
            })
        print_rows(rows[-len(plan):], ("model", "contender", "ms",
                                       "overhead_ms"))
        keras.backend.clear_session()
    return rows


def _run_decoupled_priors(settings):
    """The decoupled update alone (no model, no optimizer step) on ~16M
    weights: each closed-form prior's gradient against L2's."""
    num_params = settings.pick(full=16_000_000, tiny=20_000)
    variables = _weights(num_params, settings.pick(full=50, tiny=2))
    rounds = settings.rounds(full=7, quick=5)
    rows = []
    for jit in settings.pick(full=(False, True), tiny=(False,)):
        contenders = {}
        for name, regularizer in [("L2", tfreg.L2(0.01))] + list(
                closed_form_priors().items()):
            optimizer = tfreg_optimizers.Regularized(
                keras.optimizers.SGD(0.01), mode="decoupled",
                regularizer=regularizer, include=".")
            optimizer.build(variables)
            # pylint: disable-next=protected-access
            update = tf.function(lambda o=optimizer: o._regularize(
                tf.constant(0.01), ("gradient",)), jit_compile=jit,
                                 autograph=False)

            def call(update=update):
                update()
                variables[0].numpy()
            contenders[name] = call
        times = interleave(contenders, rounds, warmup=2)
        for name, samples in times.items():
            rows.append({
                "kind": "priors", "jit": jit, "contender": name,
                "params": sum(v.shape.num_elements() for v in variables),
                "ms": 1e3 * median(samples),
                "vs_l2": median(round_ratios(samples, times["L2"])),
            })
        print_rows(rows[-len(contenders):], ("jit", "contender", "ms",
                                             "vs_l2"))
    return rows


def _run_optimizer_first_step(settings):
    depth = settings.pick(full=128, tiny=3)
    rounds = settings.rounds(full=3, quick=1)
    sgd = lambda: keras.optimizers.SGD(1e-3)
    contenders = {"none": (None, lambda model: sgd()),
                  "tfreg L2 proximal": (tfreg.L2(1e-4),
                                        _wrapped("proximal", sgd))}
    times = {name: [] for name in contenders}
    for index in range(rounds):
        for name in _rotated(list(contenders), index):
            keras.backend.clear_session()
            gc.collect()
            regularizer, optimizer = contenders[name]
            start = time.perf_counter()
            _train_step(lambda r: _deep(r, settings, depth=depth),
                        regularizer, True, optimizer=optimizer)
            times[name].append(time.perf_counter() - start)
    keras.backend.clear_session()
    return [{"kind": "first_step", "depth": depth, "contender": name,
             "s": median(samples),
             "vs_none": median(round_ratios(samples, times["none"]))}
            for name, samples in times.items()]


def run_optimizer(settings):
    return (_run_optimizer_steps(settings) + _run_decoupled_priors(settings)
            + _run_optimizer_first_step(settings))


def _by_penalty(rows):
    """One row per penalty with its graph and XLA columns."""
    merged = {}
    for row in rows:
        mode = "xla" if row["jit"] else "graph"
        entry = merged.setdefault(row["contender"], {
            "contender": row["contender"], "params": row["params"],
            "graph_ms": float("nan"), "graph_vs_l2": float("nan"),
            "xla_ms": float("nan"), "xla_vs_l2": float("nan")})
        entry[f"{mode}_ms"] = row["ms"]
        entry[f"{mode}_vs_l2"] = row["vs_l2"]
    return list(merged.values())


def table_optimizer(rows):
    steps = [row for row in rows if row["kind"] == "step"]
    priors = [row for row in rows if row["kind"] == "priors"]
    first = [row for row in rows if row["kind"] == "first_step"]
    return (
        "ms per `train_on_batch`; overhead = median over rounds of the step "
        "minus the same round's unregularized step (control: a second "
        "unregularized model, the noise).\n\n"
        + table(steps, (("model", "model"),
                        ("jit", lambda r: "yes" if r["jit"] else "no"),
                        ("contender", "contender"), ("rounds", "rounds"),
                        ("ms", "ms"), ("overhead ms", "overhead_ms")))
        + "\n\nThe decoupled update alone (`w - eta grad R(w)` for every "
        "weight, one call), ms and per-round ratio to L2's:\n\n"
        + table(_by_penalty(priors), (
            ("params", lambda r: _size(r["params"])),
            ("penalty", "contender"), ("graph ms", "graph_ms"),
            ("graph x L2", "graph_vs_l2"), ("XLA ms", "xla_ms"),
            ("XLA x L2", "xla_vs_l2")))
        + "\n\nBuild + compile + first `train_on_batch` (jit), seconds:\n\n"
        + table(first, (("depth", "depth"), ("contender", "contender"),
                        ("s", "s"), ("x none", "vs_none"))))


def _overhead(rows, model, contender):
    found = _find(rows, kind="step", model=model, contender=contender)
    return found[0]["overhead_ms"] if found else float("nan")


OPTIMIZER_GOALS = {
    "adamw": "MLP jit: decoupled L2 overhead <= 1.1x Keras AdamW's",
    "l1": "MLP jit: proximal L1 overhead <= 0.3x Keras L1 through the loss",
    "deep": ("128-layer stack, graph: proximal L1L2 overhead <= 0.5x Keras "
             "L1L2 through the loss"),
    "priors": "decoupled closed-form prior, 16M weights: <= 1.3x L2's",
    "first": "first jit step, 128-layer stack, proximal L2: <= 1.2x none",
    "adaptive": ("MLP jit, Adam: proximal L1 overhead in Adam's metric <= "
                 "1.1x in the scalar metric"),
    "group": "MLP jit, Adam: proximal GroupLasso overhead <= 2% of the step",
}


def targets_optimizer(rows, settings):
    del settings
    out = []

    def ratio(model, ours, theirs):
        return (_overhead(rows, model, ours)
                / _overhead(rows, model, theirs))
    if _find(rows, kind="step", model="mlp"):
        value = ratio("mlp", "tfreg L2 decoupled", "Keras AdamW")
        out.append(Target(OPTIMIZER_GOALS["adamw"], "tfreg L2 decoupled", "",
                          value, value <= 1.1))
        value = ratio("mlp", "tfreg L1 proximal", "Keras L1 (loss)")
        out.append(Target(OPTIMIZER_GOALS["l1"], "tfreg L1 proximal", "",
                          value, value <= 0.3))
        value = ratio("mlp", "tfreg L1 proximal",
                      "tfreg L1 proximal, scalar metric")
        out.append(Target(OPTIMIZER_GOALS["adaptive"], "tfreg L1 proximal",
                          "", value, value <= 1.1))
        none = _find(rows, kind="step", model="mlp", contender="none")
        value = (_overhead(rows, "mlp", "tfreg GroupLasso proximal")
                 / none[0]["ms"])
        out.append(Target(OPTIMIZER_GOALS["group"],
                          "tfreg GroupLasso proximal", "", value,
                          value <= 0.02))
    if _find(rows, kind="step", model="deep128"):
        value = ratio("deep128", "tfreg L1L2 proximal", "Keras L1L2 (loss)")
        out.append(Target(OPTIMIZER_GOALS["deep"], "tfreg L1L2 proximal", "",
                          value, value <= 0.5))
    for row in _find(rows, kind="priors"):
        if row["contender"] != "L2":
            out.append(Target(OPTIMIZER_GOALS["priors"], row["contender"],
                              _mode(row["jit"]), row["vs_l2"],
                              row["vs_l2"] <= 1.3))
    for row in _find(rows, kind="first_step"):
        if row["contender"] != "none":
            out.append(Target(OPTIMIZER_GOALS["first"], row["contender"],
                              "", row["vs_none"], row["vs_none"] <= 1.2))
    return out


OPTIMIZER_CASE = Case(
    name="optimizer",
    title="Regularization in the optimizer",
    about="`tfreg.optimizers.Regularized` against Keras' regularizers "
          "through the loss and Keras' AdamW: train-step overhead on the "
          "MLP (3 x 1024, batch 256, jit; proximal steps in Adam's metric "
          "and in the scalar one) and the 128-layer stack (width 32, graph "
          "mode), the "
          "decoupled update of the closed-form priors on 16M weights, and "
          "the first jit step of the 128-layer stack.",
    run=run_optimizer,
    table=table_optimizer,
    targets=targets_optimizer,
    limits={"MLP jit": (NOISE,), "128-layer": (NOISE,),
            "decoupled closed-form prior": (Limit(
                "The Horseshoe's derivative", (
                    "The Horseshoe approximation's derivative divides by its "
                    "log1p term and raises u to a non-integer power: a log1p, "
                    "a log and two exps per weight that no rewrite of the "
                    "exact derivative removes; the other priors' gradients "
                    "take no log.")), Limit(
                "One pass per op in graph mode", (
                    "Without XLA every elementwise op is its own pass over "
                    "the weights: L2's gradient is one multiply, Student-t's "
                    "and Cauchy's `c x / (a + x^2)` four passes and "
                    "SpikeAndSlab's responsibility-weighted gradient more; "
                    "under XLA they fuse into one pass and meet the target. "
                    "Compile the step (`jit_compile=True`) to get there.")),
                NOISE)})


# ------------------------------------------------------------- outcomes --


def _example(name):
    """A script of examples/ as a module (its functions, not its main)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "examples"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def run_outcomes(settings):
    """Sparsity and shrinking measured by the two examples' `measure`."""
    sparse = _example("sparse_training")
    runs = settings.pick(full=sparse.RUNS, tiny=sparse.RUNS[:1] + (
        sparse.RUNS[-1],))
    rows = [dict(row, kind="sparsity") for row in sparse.measure(
        settings.pick(full=150, tiny=1), runs)]
    print_rows(rows, ("run", "accuracy", "zeros", "zero_units"))
    shrink = _example("residual_cnn_shrink")
    outcome = shrink.measure(settings.pick(full=40, tiny=1),
                             settings.pick(full=shrink.STRENGTHS,
                                           quick=(0.02,), tiny=(0.02,)))
    base = outcome["cost"]
    for result in outcome["results"]:
        row = {
            "kind": "shrink", "strength": result["strength"],
            "accuracy": outcome["accuracy"],
            "tuned_accuracy": result["tuned_accuracy"],
            "params": base["params"], "shrunk_params": result["cost"]["params"],
            "flops": base["flops"], "shrunk_flops": result["cost"]["flops"],
            "chosen": result is outcome["chosen"]}
        if row["chosen"]:
            row.update(latency_ratio=outcome["latency_ratio"],
                       saved_kib=outcome["saved_before"] / 1024,
                       shrunk_saved_kib=outcome["saved_after"] / 1024)
        rows.append(row)
    print_rows(rows[-len(outcome["results"]):],
               ("strength", "tuned_accuracy", "shrunk_params"))
    keras.backend.clear_session()
    return rows


def table_outcomes(rows):
    sparsity = table(_find(rows, kind="sparsity"), (
        ("run", "run"), ("val accuracy", "accuracy"),
        ("exact zeros", lambda row: f"{row['zeros']} / {row['weights']}"),
        ("all-zero units",
         lambda row: f"{row['zero_units']} / {row['units']}")))
    shrink = table(_find(rows, kind="shrink"), (
        ("GroupLasso", "strength"),
        ("val accuracy (unregularized)",
         lambda row: f"{row['tuned_accuracy']:.4f} ({row['accuracy']:.4f})"),
        ("params", lambda row: f"{row['params']:,} -> {row['shrunk_params']:,}"),
        ("FLOPs", lambda row: f"{row['flops']:,} -> {row['shrunk_flops']:,}"),
        ("latency shrunk / original",
         lambda row: _cell(row["latency_ratio"]) if row["chosen"] else ""),
        ("SavedModel KiB",
         lambda row: (f"{row['saved_kib']:.0f} -> {row['shrunk_saved_kib']:.0f}"
                      if row["chosen"] else ""))))
    return ("First table: the hidden kernel of the digits MLP (64-64-10, "
            "SGD 0.1 with momentum, 150 epochs) after training. Second: a "
            "residual CNN on digits after coupled group lasso through the "
            "proximal optimizer, `tfreg.shrink` (outputs equal the pruned "
            "model's, checked) and fine-tuning; latency and SavedModel size "
            "for the strongest strength within 1 point.\n\n" + sparsity
            + "\n\n" + shrink)


OUTCOME_GOALS = {
    "zeros": "proximal run: exact zeros where the loss path has none, val "
             "accuracy >= best loss run - 1 point (accuracy gap, points)",
    "shrink": "shrunk residual CNN: >= 2x fewer parameters at val accuracy "
              "within 1 point of unregularized (parameter ratio)",
}


def targets_outcomes(rows, settings):
    out = []
    sparsity = _find(rows, kind="sparsity")
    loss_runs = [row for row in sparsity if row["through"] == "loss"]
    best = max(row["accuracy"] for row in loss_runs) if loss_runs else None
    for row in sparsity:
        if row["through"] == "proximal" and best is not None:
            gap = 100 * (best - row["accuracy"])
            out.append(Target(
                OUTCOME_GOALS["zeros"],
                f"{row['run']} ({row['zeros']} zeros)", "", gap,
                gap <= 1 and row["zeros"] > 0
                and all(loss["zeros"] == 0 for loss in loss_runs)))
    for row in _find(rows, kind="shrink", chosen=True):
        ratio = row["params"] / row["shrunk_params"]
        out.append(Target(
            OUTCOME_GOALS["shrink"], f"GroupLasso({row['strength']:g})", "",
            ratio, ratio >= 2 and row["tuned_accuracy"] >= row["accuracy"]
            - 0.01))
    return out


OUTCOMES_CASE = Case(
    name="outcomes",
    title="What the optimizer and shrink give",
    about="Exact zeros from proximal steps against the loss path "
          "(examples/sparse_training.py), and a residual CNN shrunk after "
          "coupled group lasso (examples/residual_cnn_shrink.py).",
    run=run_outcomes,
    table=table_outcomes,
    targets=targets_outcomes)

# --------------------------------------------------------- adam sparsity --

SPARSITY_OPTIMIZERS = {
    "SGD(0.1)": lambda: keras.optimizers.SGD(0.1),
    "SGD(0.1, momentum=0.9)": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "Adam(1e-3)": lambda: keras.optimizers.Adam(1e-3),
    "RMSprop(1e-3)": lambda: keras.optimizers.RMSprop(1e-3),
    "AdamW(1e-3)": lambda: keras.optimizers.AdamW(1e-3),
}
SPARSITY_STRENGTHS = (1e-3, 3e-3, 1e-2)
# GroupLasso strengths of the residual CNN trained on with Adam.
CNN_ADAM_STRENGTHS = (1e-4, 3e-4, 5e-4)


def _digits_sparsity(settings):
    """The digits MLP (examples/sparse_training.py) per optimizer: no
    penalty, then proximal L1 at each strength (30 epochs, batch 64)."""
    sparse = _example("sparse_training")
    split = sparse.data()
    epochs = settings.pick(full=30, tiny=1)
    # A quick run keeps within its budget: Adam at one strength.
    names = settings.pick(full=list(SPARSITY_OPTIMIZERS),
                          quick=["Adam(1e-3)"])
    strengths = settings.pick(full=SPARSITY_STRENGTHS,
                              quick=SPARSITY_STRENGTHS[:1])
    rows = []
    for name in names:
        for strength in (None,) + tuple(strengths):
            accuracy, kernel = sparse.train(
                None if strength is None else tfreg.L1(strength),
                "loss" if strength is None else "proximal", epochs, split,
                optimizer=SPARSITY_OPTIMIZERS[name]())
            rows.append({"kind": "digits", "optimizer": name,
                         "strength": strength, "accuracy": accuracy,
                         "zeros": float(np.mean(kernel == 0))})
            print_rows(rows[-1:], ("optimizer", "strength", "accuracy",
                                   "zeros"))
            keras.backend.clear_session()
    return rows


def _cnn_with_adam(settings):
    """examples/residual_cnn_shrink.py with Adam for the coupled group
    lasso: baseline (Adam), proximal Adam, shrink, fine-tune (Adam)."""
    # Minutes of training: full runs only (tiny: one epoch, one strength).
    strengths = settings.pick(full=CNN_ADAM_STRENGTHS, quick=(),
                              tiny=CNN_ADAM_STRENGTHS[:1])
    if not strengths:
        return []
    example = _example("residual_cnn_shrink")
    data = example.digits()
    x_train, x_val, y_train, y_val = data
    epochs = settings.pick(full=40, tiny=1)
    baseline = example.train(data, epochs)
    base = example.accuracy(baseline, x_val, y_val)
    params = tfreg.model_cost(baseline)["params"]
    rows = []
    for strength in strengths:
        keras.utils.set_random_seed(1)
        model = keras.models.clone_model(baseline)
        model.set_weights(baseline.get_weights())
        penalty = tfreg.apply_groups(model, tfreg.channel_groups(model),
                                     tfreg.GroupLasso(strength),
                                     via="optimizer")
        example._compile(model, tfreg_optimizers.Regularized(  # pylint: disable=protected-access
            keras.optimizers.Adam(example.LEARNING_RATE),
            penalties=[penalty], model=model))
        model.fit(x_train, y_train, batch_size=64,
                  epochs=max(1, epochs // 2), verbose=0)
        small = tfreg.shrink(model)
        tuned = keras.models.clone_model(small)
        tuned.set_weights(small.get_weights())
        example._compile(tuned, keras.optimizers.Adam(  # pylint: disable=protected-access
            example.LEARNING_RATE / 2))
        tuned.fit(x_train, y_train, batch_size=64,
                  epochs=max(1, epochs // 2), verbose=0)
        rows.append({"kind": "cnn", "strength": strength, "accuracy": base,
                     "tuned_accuracy": example.accuracy(tuned, x_val, y_val),
                     "params": params,
                     "shrunk_params": tfreg.model_cost(small)["params"]})
        print_rows(rows[-1:], ("strength", "tuned_accuracy", "shrunk_params"))
    keras.backend.clear_session()
    return rows


def run_adam_sparsity(settings):
    return _digits_sparsity(settings) + _cnn_with_adam(settings)


def table_adam_sparsity(rows):
    digits = {}
    for row in _find(rows, kind="digits"):
        cells = digits.setdefault(row["optimizer"],
                                  {"optimizer": row["optimizer"]})
        key = "none" if row["strength"] is None else f"{row['strength']:g}"
        cells[key] = (f"{100 * row['accuracy']:.1f}%" if row["strength"]
                      is None else f"{100 * row['zeros']:.0f}% zeros, "
                      f"{100 * row['accuracy']:.1f}%")
    strengths = sorted({row["strength"] for row in _find(rows, kind="digits")
                        if row["strength"] is not None})
    columns = [("optimizer", "optimizer"),
               ("no penalty", lambda r: r.get("none", ""))] + [
                   (f"proximal L1 {s:g}", lambda r, s=s: r.get(f"{s:g}", ""))
                   for s in strengths]
    cnn = table(_find(rows, kind="cnn"), (
        ("GroupLasso", "strength"),
        ("val accuracy (unregularized)",
         lambda row: f"{row['tuned_accuracy']:.4f} ({row['accuracy']:.4f})"),
        ("params", lambda row: f"{row['params']:,} -> "
                               f"{row['shrunk_params']:,}")))
    return ("Digits MLP 64-64-10 (30 epochs, batch 64): exact zeros of the "
            "hidden kernel and validation accuracy, proximal L1 in each "
            "optimizer's own metric.\n\n" + table(list(digits.values()),
                                                   columns)
            + "\n\nThe residual CNN of examples/residual_cnn_shrink.py, "
            "coupled group lasso through proximal Adam, shrunk and "
            "fine-tuned:\n\n" + cnn)


ADAM_SPARSITY_GOALS = {
    "digits": ("digits MLP: some L1 strength in 1e-3..1e-2 gives >= 40% "
               "exact zeros within 1.5 points of no penalty (zeros at the "
               "best such strength)"),
    "cnn": ("residual CNN with Adam: >= 2x fewer parameters after shrink "
            "within 1 point of unregularized (parameter ratio)"),
}


def targets_adam_sparsity(rows, settings):
    del settings
    out = []
    digits = _find(rows, kind="digits")
    for name in dict.fromkeys(row["optimizer"] for row in digits):
        runs = [row for row in digits if row["optimizer"] == name]
        base = [row for row in runs if row["strength"] is None]
        if not base:
            continue
        within = [row for row in runs if row["strength"] is not None
                  and row["accuracy"] >= base[0]["accuracy"] - 0.015]
        best = max((row["zeros"] for row in within), default=0.0)
        out.append(Target(ADAM_SPARSITY_GOALS["digits"], name, "", best,
                          best >= 0.4))
    cnn = _find(rows, kind="cnn")
    within = [row for row in cnn
              if row["tuned_accuracy"] >= row["accuracy"] - 0.01]
    if cnn:
        ratio = max((row["params"] / row["shrunk_params"] for row in within),
                    default=0.0)
        out.append(Target(ADAM_SPARSITY_GOALS["cnn"], "GroupLasso, Adam", "",
                          ratio, ratio >= 2))
    return out


ADAM_SPARSITY_CASE = Case(
    name="adam_sparsity",
    title="Exact zeros with Adam",
    about="Proximal steps in each optimizer's own metric: exact zeros and "
          "accuracy of the digits MLP under SGD, momentum SGD, Adam, "
          "RMSprop and AdamW, and the residual CNN shrunk after group "
          "lasso through proximal Adam.",
    run=run_adam_sparsity,
    table=table_adam_sparsity,
    targets=targets_adam_sparsity)


CASES = [PENALTY, PRIORS_CASE, ACCURACY_CASE, MEMORY_CASE, TRAIN_STEP, FIRST_STEP,
         OPTIMIZER_CASE, OUTCOMES_CASE, ADAM_SPARSITY_CASE]


# ---------------------------------------------------------- shrink speed --

SHRINK_SPEED_BOUND = 3.0


def _shrink_model(settings):
    """ResNet50 (224 x 224); tiny: MobileNet (alpha 0.25, 32 x 32)."""
    if settings.scale == "tiny":
        return "MobileNet", keras.applications.MobileNet(
            weights=None, alpha=0.25, input_shape=(32, 32, 3))
    return "ResNet50", keras.applications.ResNet50(weights=None)


def run_shrink_speed(settings):
    name, model = _shrink_model(settings)
    groups = tfreg.channel_groups(model)
    for index, group in enumerate(groups):
        if index % 2:  # Every other group zeroed, all its slices.
            for piece in group.trainable_slices():
                value = piece.variable.numpy()
                entries = [slice(None)] * value.ndim
                entries[piece.axis] = list(piece.indices)
                value[tuple(entries)] = 0
                piece.variable.assign(value)

    def clone():
        keras.models.clone_model(model).set_weights(model.get_weights())

    def shrink():
        tfreg.shrink(model, groups=tfreg.channel_groups(model))

    times = interleave({"clone_model + set_weights": clone,
                        "channel_groups + shrink": shrink},
                       settings.rounds(full=3, quick=1),
                       warmup=settings.pick(full=1, quick=0))
    rows = []
    for contender, seconds in times.items():
        ratios = round_ratios(seconds, times["clone_model + set_weights"])
        rows.append({"model": name, "contender": contender,
                     "median_s": median(seconds), "vs_clone": median(ratios),
                     "rounds_vs_clone": ratios})
    return rows


def table_shrink_speed(rows):
    return ("Seconds to trace the channel groups of a model with every "
            "other group zeroed and shrink it, against copying the model "
            "(`keras.models.clone_model` + `set_weights`); `x clone` is the "
            "median per-round ratio.\n\n" + table(rows, (
                ("model", "model"), ("contender", "contender"),
                ("s", "median_s"), ("x clone", "vs_clone"),
                ("x clone per round", lambda r: " ".join(
                    f"{x:.2f}" for x in r["rounds_vs_clone"])))))


def targets_shrink_speed(rows, settings):
    del settings
    return [Target(f"channel_groups + shrink <= {SHRINK_SPEED_BOUND:g}x "
                   f"clone_model + set_weights", row["model"], "",
                   row["vs_clone"], row["vs_clone"] <= SHRINK_SPEED_BOUND)
            for row in rows if row["contender"] == "channel_groups + shrink"]


SHRINK_SPEED_CASE = Case(
    name="shrink_speed",
    title="Shrink speed",
    about="channel_groups and shrink of ResNet50 against a plain copy of "
          "the model.",
    run=run_shrink_speed,
    table=table_shrink_speed,
    targets=targets_shrink_speed)
CASES.append(SHRINK_SPEED_CASE)


# ---------------------------------------------------------------- report --

def print_rows(rows, keys):
    for row in rows:
        print("  ".join(
            f"{key}={row[key]:.3g}" if isinstance(row[key], float)
            else f"{key}={row[key]}" for key in keys), flush=True)


def _find(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _cell(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def table(rows, columns):
    """A Markdown table: `columns` is (heading, key or callable(row)) pairs."""
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(
            _cell(key(row) if callable(key) else row[key])
            for _, key in columns) + " |")
    return "\n".join(lines)


def _verdict(target):
    text = f"{target.measured:.3g} {'✓' if target.met else '✗'}"
    return text if target.met else f"**{text}**"


def targets_table(targets):
    """One row per (goal, subject), one column per condition (size, mode),
    each cell one number with its verdict; a goal is named on its first row."""
    conditions = list(dict.fromkeys(t.condition for t in targets))
    rows = {}
    for target in targets:
        row = rows.setdefault((target.goal, target.subject),
                              {"subject": target.subject})
        row[target.condition] = _verdict(target)
    goals = [goal for goal, _ in rows]
    return table(
        [dict(row, target=goal if index == 0 or goals[index - 1] != goal
              else "")
         for index, ((goal, _), row) in enumerate(rows.items())],
        [("target", "target"), ("subject", "subject")]
        + [(c or "measured", lambda r, c=c: r.get(c, "")) for c in conditions])


QUICK_GOAL = f"`--quick` finishes in under {QUICK_SECONDS} s"
# Limits of the run's own target (not a case's).
RUN_LIMITS = {QUICK_GOAL: (Limit("Machine load", (
    "The run's time follows the machine's load (the load average before and "
    "after is under Machine).")),)}


def run_targets(meta):
    """The run's own target: a quick run of every case in time."""
    if meta["scale"] != "quick" or meta["cases"] != [c.name for c in CASES]:
        return []
    return [Target(QUICK_GOAL, "whole run (s)", "", meta["seconds"],
                   meta["seconds"] <= QUICK_SECONDS, case="run")]


def _limits_of(goal):
    for limits in [case.limits for case in CASES] + [RUN_LIMITS]:
        for key, found in limits.items():
            if goal.startswith(key):
                return found
    return ()


HOW_TO_RUN = """\
`tools/bench.py` is a harness, not a test. Each case runs its contenders
interleaved in one process (A B C, B C A, C A B, ...: the order rotates every
round) after a warm-up and reports medians and the median of per-round ratios,
so a noisy machine shifts all contenders alike. Variables are captured by the
timed `tf.function`s, never passed as arguments. Compare ratios, not times,
across runs: this machine is shared and its speed moves between runs.

```sh
python tools/bench.py --quick --write BENCHMARKS.md   # quick run (a target: 3 minutes)
python tools/bench.py --write BENCHMARKS.md           # full run, about 30 minutes
python tools/bench.py --cases optimizer,outcomes --json out.json   # some cases
```

This file is the output of one run (command and machine below); the history
of earlier rounds is in git. Cases:"""


def _unwrapped(text):
    """Each prose paragraph of `text` on one line (code blocks kept), so the
    document stays short."""
    return "\n\n".join(
        block if block.startswith("```") else block.replace("\n", " ")
        for block in text.strip("\n").split("\n\n"))


def document(results):
    """The whole of BENCHMARKS.md from one run's results."""
    meta = results["machine"]
    ran = [case for case in CASES if case.name in results["cases"]]
    targets = [Target(**t) for t in results["targets"]]
    lines = ["# Benchmarks", "",
             f"Generated by `{meta['command']}` on {meta['date']} at commit "
             f"{meta['commit']}; rerun it rather than editing this file.",
             "", "## How to run", "", _unwrapped(HOW_TO_RUN)]
    lines[-1] += " " + "; ".join(f"`{case.name}`: {case.about.rstrip('.')}"
                                 for case in CASES) + "."
    seconds = ", ".join(f"{name} {s:.0f} s"
                        for name, s in results["case_seconds"].items())
    lines += [
        "", "## Machine", "",
        f"- {meta['cpu']}, {meta['cores']} cores, {meta['platform']}; "
        f"Python {meta['python']}, TensorFlow {meta['tensorflow']}, Keras "
        f"{meta['keras']} ({'tf_keras' if meta['legacy'] else 'Keras 3'}), "
        f"`TF_CPU_ALLOCATOR_USE_BFC={meta['cpu_allocator_use_bfc']}`",
        f"- load average (1/5/15 min) before {meta['load_before']}, after "
        f"{meta['load_after']}; peak memory {meta['max_rss_gb']:.1f} GB; "
        f"wall time {meta['seconds']:.0f} s ({seconds})",
    ]
    met = sum(t.met for t in targets)
    lines += ["", "## Targets", "",
              f"{met} of {len(targets)} measurements meet their target. "
              "Each cell is one number of this run: ✓ met, ✗ not met.", ""]
    titles = {case.name: case.title for case in CASES}
    titles["run"] = "This run"
    for name, title in titles.items():
        of_case = [t for t in targets if t.case == name]
        if of_case:
            lines += [f"### {title}", targets_table(of_case), ""]
    unmet = {}
    for target in targets:
        if not target.met:
            unmet.setdefault(target.goal, []).append(target)
    if unmet:
        lines += ["## What limits the unmet targets", ""]
        cited = {}
        for goal in unmet:
            for limit in _limits_of(goal) or (None,):
                cited.setdefault(limit, []).append(goal)
        for limit, goals in cited.items():
            which = "; ".join(goals)
            lines.append(f"- **{limit.title}.** {limit.text} ({which})"
                         if limit else f"- **Not analysed:** {which}.")
        lines.append("")
    lines += ["## Results"]
    for case in ran:
        lines += ["", f"### {case.title}", "",
                  case.table(results["cases"][case.name])]
    return "\n".join(lines) + "\n"


def _git_commit():
    # Under `bazel run` this file is in the runfiles tree, outside the clone.
    clone = os.environ.get("BUILD_WORKSPACE_DIRECTORY",
                           os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True,
            text=True, check=True, cwd=clone).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(settings, case_names, command, json_path=None):
    """Runs the named cases; returns the results (JSON-ready)."""
    start = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = {"cases": {}, "case_seconds": {}, "targets": []}
    for case in CASES:
        if case.name not in case_names:
            continue
        begin = time.time()
        results["cases"][case.name] = case.run(settings)
        results["case_seconds"][case.name] = round(time.time() - begin, 1)
        if json_path:  # what has run so far survives a crash of a later case
            with open(json_path, "w") as f:
                json.dump(results, f, indent=1)
    results["machine"] = {
        "command": command, "scale": settings.scale,
        "cases": [c.name for c in CASES if c.name in case_names],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "cpu": _cpu_name(), "cores": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "legacy": _keras.LEGACY,
        "cpu_allocator_use_bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC",
                                                "unset"),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": time.time() - start,
        "max_rss_gb": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    targets = []
    for case in CASES:
        if case.name in results["cases"]:
            targets += [dataclasses.replace(target, case=case.name)
                        for target in case.targets(results["cases"][case.name],
                                                   settings)]
    targets += run_targets(results["machine"])
    results["targets"] = [dataclasses.asdict(t) for t in targets]
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true",
                       help="Smaller sizes and fewer rounds (< 3 minutes).")
    scale.add_argument("--tiny", action="store_true",
                       help="Every case at toy sizes, one round (a smoke "
                            "test; the numbers mean nothing).")
    names = [case.name for case in CASES]
    parser.add_argument("--cases", default=",".join(names),
                        help=f"Comma-separated subset of {names}.")
    parser.add_argument("--rounds", type=int, default=None,
                        help="Timed rounds of every case (default by case "
                             "and scale); train_step adds rounds within its "
                             "time budget per model.")
    parser.add_argument("--write", metavar="PATH",
                        help="Write the Markdown document (BENCHMARKS.md).")
    parser.add_argument("--json", metavar="PATH",
                        help="Write the raw results as JSON.")
    parser.add_argument("--from-json", metavar="PATH",
                        help="Run nothing: render the document of the run "
                             "saved with --json.")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Received: {args.rounds}")
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(names))
    if unknown:
        parser.error(f"Unknown case(s) {unknown}. Expected a subset of "
                     f"{names}.")
    # `bazel run` starts in the runfiles tree: paths are the caller's.
    caller = os.environ.get("BUILD_WORKING_DIRECTORY", "")
    write, json_path = (os.path.join(caller, path) if path else None
                        for path in (args.write, args.json))
    settings = Settings("quick" if args.quick else "tiny" if args.tiny
                        else "full", args.rounds)
    command = "python tools/bench.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    if args.from_json:
        with open(os.path.join(caller, args.from_json)) as f:
            results = json.load(f)
    else:
        results = run(settings, cases, command.strip(), json_path)
    text = document(results)
    if write:
        with open(write, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
