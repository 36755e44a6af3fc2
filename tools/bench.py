"""Benchmark harness for tfreg's regularizers (a harness, not a test).

Every case runs its contenders interleaved in one process (A B C, B C A,
C A B, ...), after a warm-up, and reports medians and the median of
per-round ratios, so that a noisy machine shifts all contenders alike. The
machine load (`os.getloadavg`) is recorded before and after the run, with
peak memory, `TF_CPU_ALLOCATOR_USE_BFC`, and the minor page faults per call
of every contender. Results go to a JSON file and a Markdown table.

Cases:
  train_step   step time: no regularizer vs Keras' own vs tfreg (same math),
               MLP (~3M params), CNN, 128 small Dense layers; with and
               without jit_compile; a second unregularized model (control)
               shows the noise of the overhead.
  penalty      GB/s of weights for the penalty value, and value+gradient,
               against a read-only floor (reduce_sum of the same weights)
               measured in the same rounds; ~50 tensors; graph and XLA.
  priors       every tfreg prior vs TFP `log_prob` vs tfreg L2, value+gradient
               on the same weights.
  first_step   time to the first train step (trace + compile) vs depth of a
               Dense stack with a regularizer on every layer.

Usage:
  python tools/bench.py --quick           # < 3 minutes on an idle machine:
                                          # 4M params (priors 1M),
                                          # 2 train-step cases, depth 32
  python tools/bench.py                   # full run (documented in BENCHMARKS.md)
  python tools/bench.py --cases penalty --json out.json --markdown out.md
"""

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

import tfreg  # pylint: disable=g-import-not-at-top
from tfreg import _keras  # pylint: disable=g-import-not-at-top

keras = _keras.keras

CASES = ("penalty", "priors", "train_step", "first_step")


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

    Fresh pages touched for the first time: on this CPU, XLA's temporary
    buffers above glibc's 32 MB mmap limit are mapped and faulted in anew on
    every call unless TF's CPU allocator is BFC (BENCHMARKS.md).
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


# ---------------------------------------------------------------- penalty --

def _weights(num_params, num_tensors=50, seed=0):
    """~num_tensors float32 variables totalling ~num_params, kernel-like shapes."""
    rng = np.random.default_rng(seed)
    shares = rng.integers(1, 100, size=num_tensors).astype(float)
    sizes = (shares / shares.sum() * num_params).astype(int)
    variables = []
    for index, size in enumerate(sizes):
        if index % 5 == 4:  # a Conv2D kernel (3, 3, in, out)
            out = 128
            shape = (3, 3, max(1, size // (9 * out)), out)
        else:
            out = 256
            shape = (max(1, size // out), out)
        variables.append(tf.Variable(
            rng.normal(0.0, 0.05, size=shape).astype(np.float32)))
    return variables


def _penalty_fn(variables, penalty, gradient, jit):
    """A tf.function over the captured variables (never passed as arguments)."""
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
    """Name -> (Keras' own or None, tfreg), same math."""
    return {
        "L1": (keras.regularizers.L1(0.01), tfreg.L1(0.01)),
        "L2": (keras.regularizers.L2(0.01), tfreg.L2(0.01)),
        "L1L2": (keras.regularizers.L1L2(0.01, 0.01), tfreg.L1L2(0.01, 0.01)),
    }


def closed_form_priors():
    """Name -> tfreg prior with a closed form, for every one in tfreg.priors."""
    priors = getattr(tfreg, "priors", None)
    if priors is None:
        return {}
    found = {}
    for name in ("Normal", "Laplace", "StudentT", "Cauchy", "Horseshoe",
                 "SpikeAndSlab"):
        cls = getattr(priors, name, None)
        if cls is not None:
            found[name] = cls()
    return found


def bench_penalty(sizes, rounds, modes, with_priors=True):
    rows = []
    for num_params in sizes:
        variables = _weights(num_params)
        nbytes = sum(v.shape.num_elements() for v in variables) * 4
        regularizers = {}
        for name, (theirs, ours) in penalty_contenders().items():
            regularizers[f"keras {name}"] = theirs
            regularizers[f"tfreg {name}"] = ours
        if with_priors:
            for name, prior in closed_form_priors().items():
                regularizers[f"tfreg {name}"] = prior
        for jit in modes:
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
                        "params": int(nbytes // 4), "tensors": len(variables),
                        "mode": "xla" if jit else "graph",
                        "what": "value+grad" if gradient else "value",
                        "contender": name,
                        "median_ms": 1e3 * median(samples),
                        "gb_per_s": nbytes / median(samples) / 1e9,
                        "floor_fraction": median(round_ratios(floor, samples)),
                        "page_faults": page_faults_per_call(contenders[name]),
                    })
                print_rows(rows[first:], ("params", "mode", "what",
                                                "contender", "gb_per_s",
                                                "floor_fraction"))
    return rows


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


def bench_priors(num_params, rounds, modes, num_tensors=50):
    priors = closed_form_priors()
    if not priors:
        return []
    variables = _weights(num_params, num_tensors=num_tensors, seed=1)
    twins = tfp_twins()
    rows = []
    for jit in modes:
        contenders = {"tfreg L2": _penalty_fn(variables, tfreg.L2(0.01), True,
                                              jit)}
        for name, prior in priors.items():
            contenders[f"tfreg {name}"] = _penalty_fn(variables, prior, True,
                                                      jit)
            if name in twins:
                distribution = twins[name]()
                contenders[f"tfp {name}"] = _penalty_fn(
                    variables,
                    lambda v, d=distribution: -tf.reduce_sum(d.log_prob(v)),
                    True, jit)
        generic = getattr(tfreg.priors, "Prior", None)
        if generic is not None:
            contenders["tfreg Prior(tfd.Normal)"] = _penalty_fn(
                variables, generic(twins["Normal"]()), True, jit)
        # What one log per weight costs, value only, no gradient: Student-t
        # and Cauchy group their logs under XLA (penalties.log1p_sum).
        contenders["sum(log1p(w^2)), value only"] = _penalty_fn(
            variables, lambda v: tf.reduce_sum(tf.math.log1p(tf.square(v))),
            False, jit)
        times = interleave(contenders, rounds, warmup=2)
        base = times["tfreg L2"]
        for name, samples in times.items():
            rows.append({
                "params": int(sum(v.shape.num_elements() for v in variables)),
                "mode": "xla" if jit else "graph", "contender": name,
                "median_ms": 1e3 * median(samples),
                "vs_tfreg_l2": median(round_ratios(samples, base)),
                "page_faults": page_faults_per_call(contenders[name]),
            })
        print_rows(rows[-len(times):], ("mode", "contender", "median_ms",
                                        "vs_tfreg_l2"))
    return rows


# ------------------------------------------------------------- train step --

def _mlp(regularizer):
    inputs = keras.Input((784,))
    x = inputs
    for units in (1024, 1024, 1024):
        x = keras.layers.Dense(units, activation="relu",
                               kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (128, 784)


def _cnn(regularizer):
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                kernel_regularizer=regularizer)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu",
                           kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (64, 32, 32, 3)


def _deep(regularizer, depth=128, units=32):
    inputs = keras.Input((units,))
    x = inputs
    for _ in range(depth):
        x = keras.layers.Dense(units, activation="relu",
                               kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (64, units)


MODELS = {"mlp": _mlp, "cnn": _cnn, "deep128": _deep}


def _train_step(build, regularizer, jit, seed=0):
    keras.utils.set_random_seed(seed)
    model, input_shape = build(regularizer)
    model.compile(optimizer=keras.optimizers.SGD(0.001),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True),
                  jit_compile=jit)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=input_shape).astype(np.float32)
    y = rng.integers(0, 10, size=(input_shape[0],)).astype(np.int32)
    model.train_on_batch(x, y)
    return lambda: model.train_on_batch(x, y)


def _penalty_alone(model, theirs, ours, jit, rounds):
    """Value+gradient of the penalty on the model's kernel shapes, no model.

    What the regularizer adds to a step, without the step's own noise (the
    overhead above is a difference of 10-30 ms steps).
    """
    rng = np.random.default_rng(0)
    variables = [tf.Variable(rng.normal(0.0, 0.05, v.shape).astype(np.float32))
                 for v in model.trainable_weights if "kernel" in v.name]
    times = interleave({"keras": _penalty_fn(variables, theirs, True, jit),
                        "tfreg": _penalty_fn(variables, ours, True, jit)},
                       rounds, warmup=2, repeat=10)
    return {"keras_penalty_ms": 1e3 * median(times["keras"]),
            "tfreg_penalty_ms": 1e3 * median(times["tfreg"]),
            "penalty_ratio": median(round_ratios(times["tfreg"],
                                                 times["keras"]))}


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


def bench_train_step(plan, rounds, repeat, seconds):
    """Each (model, regularizer, jit) for at least `rounds` or `seconds`.

    A regularizer adds 1-3 ms to a 5-30 ms step whose time drifts by as
    much between rounds, so short steps get as many rounds as `seconds`
    allows.
    """
    rows = []
    for model_name, regularizer_name, jit in plan:
        theirs, ours = penalty_contenders()[regularizer_name]
        build = MODELS[model_name]
        contenders = {
            "none": _train_step(build, None, jit),
            "keras": _train_step(build, theirs, jit),
            "tfreg": _train_step(build, ours, jit),
            # A second unregularized model with the same weights: its
            # "overhead" is the noise. (Other weights give other step
            # times: a 128-layer stack's varied by 0.2-0.8 ms with seed.)
            "control": _train_step(build, None, jit),
        }
        # _rounds_within has run every contender for two rounds: the warm-up.
        times = interleave(
            contenders, _rounds_within(contenders, rounds, repeat, seconds),
            warmup=0, repeat=repeat)
        none, theirs_t, ours_t = times["none"], times["keras"], times["tfreg"]

        def overhead(name):
            # Median of per-round differences: a round's steps run back to
            # back, so a drift of the machine between rounds (which moves
            # a 10 ms step by more than a regularizer's 1-3 ms) cancels.
            return median([a - b for a, b in zip(times[name], none)])
        keras_overhead, tfreg_overhead = overhead("keras"), overhead("tfreg")
        row = {
            "model": model_name, "regularizer": regularizer_name,
            "jit": jit,
            "params": None,
            "none_ms": 1e3 * median(none), "keras_ms": 1e3 * median(theirs_t),
            "tfreg_ms": 1e3 * median(ours_t),
            "keras_overhead_ms": 1e3 * keras_overhead,
            "tfreg_overhead_ms": 1e3 * tfreg_overhead,
            "control_overhead_ms": 1e3 * overhead("control"),
            "overhead_ratio": (tfreg_overhead / keras_overhead
                               if keras_overhead > 0 else float("nan")),
            "rounds": len(none),
            "tfreg_vs_keras_step": median(round_ratios(ours_t, theirs_t)),
            "page_faults": {name: page_faults_per_call(contenders[name])
                            for name in ("none", "keras", "tfreg")},
        }
        model, _ = build(None)
        row["params"] = int(model.count_params())
        row.update(_penalty_alone(model, theirs, ours, jit, 3 * rounds))
        rows.append(row)
        print_rows([row], ("model", "regularizer", "jit", "rounds", "none_ms",
                           "keras_ms", "tfreg_ms", "overhead_ratio",
                           "control_overhead_ms", "penalty_ratio"))
        keras.backend.clear_session()
    return rows


# ------------------------------------------------------------- first step --

def bench_first_step(depths, rounds, jit=True):
    rows = []
    for depth in depths:
        contenders = {
            "none": None,
            "keras": keras.regularizers.L2(0.01),
            "tfreg": tfreg.L2(0.01),
            "tfreg StudentT": tfreg.priors.StudentT(3.0),
        }
        times = {name: [] for name in contenders}
        for index in range(rounds):
            for name in _rotated(list(contenders), index):
                regularizer = contenders[name]
                keras.backend.clear_session()
                gc.collect()  # the previous models' garbage, not this one's
                start = time.perf_counter()
                _train_step(lambda r, d=depth: _deep(r, depth=d), regularizer,
                            jit)
                times[name].append(time.perf_counter() - start)
        none = times["none"]
        for name, samples in times.items():
            ratios = round_ratios(samples, none)
            rows.append({
                "depth": depth, "jit": jit, "contender": name,
                "median_s": median(samples),
                "vs_none": median(ratios),
                "rounds_s": samples, "rounds_vs_none": ratios,
            })
        print_rows(rows[-len(contenders):], ("depth", "contender", "median_s",
                                             "vs_none"))
    keras.backend.clear_session()
    return rows


# ---------------------------------------------------------------- report --

def print_rows(rows, keys):
    for row in rows:
        print("  ".join(
            f"{key}={row[key]:.3g}" if isinstance(row[key], float)
            else f"{key}={row[key]}" for key in keys), flush=True)


def _find(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def targets(results):
    """Each target of issue 8 with its measured ratio and whether it is met."""
    out = []
    penalty = results.get("penalty", [])
    for row in penalty:
        name = row["contender"]
        if not name.startswith("tfreg"):
            continue
        if row["what"] == "value":
            goal, bound = "value >= 0.70 of read floor", 0.70
        else:
            goal, bound = "value+grad >= 0.40 of read floor", 0.40
        out.append({
            "target": f"{name} {goal} ({row['mode']}, {row['params']/1e6:.0f}M)",
            "measured": row["floor_fraction"],
            "met": row["floor_fraction"] >= bound})
        keras_name = "keras" + name[len("tfreg"):]
        twin = _find(penalty, contender=keras_name, mode=row["mode"],
                     what=row["what"], params=row["params"])
        if twin:
            ratio = twin[0]["median_ms"] / row["median_ms"]
            out.append({
                "target": f"{name} {row['what']} not slower than Keras "
                          f"({row['mode']}, {row['params']/1e6:.0f}M): "
                          f"speed-up",
                "measured": ratio, "met": ratio >= 1.0})
    for model, reg, jit, bound in (("mlp", "L2", True, 0.8),
                                   ("deep128", "L1L2", False, 0.6)):
        for row in _find(results.get("train_step", []), model=model,
                         regularizer=reg, jit=jit):
            out.append({
                "target": f"{model} jit={jit} tfreg {reg} overhead <= "
                          f"{bound}x Keras' overhead",
                "measured": row["overhead_ratio"],
                "met": row["overhead_ratio"] <= bound})
            out.append({
                "target": f"{model} jit={jit} tfreg {reg} penalty alone "
                          f"(model's kernel shapes) <= {bound}x Keras'",
                "measured": row["penalty_ratio"],
                "met": row["penalty_ratio"] <= bound})
    for row in results.get("priors", []):
        if row["contender"].startswith("tfreg ") and row["contender"] != "tfreg L2":
            out.append({
                "target": f"{row['contender']} value+grad <= 1.3x tfreg L2 "
                          f"({row['mode']})",
                "measured": row["vs_tfreg_l2"],
                "met": row["vs_tfreg_l2"] <= 1.3})
    first_step = results.get("first_step", [])
    deepest = max((row["depth"] for row in first_step), default=None)
    for row in first_step:
        if row["contender"].startswith("tfreg") and row["depth"] == deepest:
            out.append({
                "target": f"first step, depth {row['depth']}, jit: "
                          f"{row['contender']} <= 1.5x none",
                "measured": row["vs_none"], "met": row["vs_none"] <= 1.5})
    return out


def _table(rows, columns):
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for _, key in columns:
            value = row[key] if not callable(key) else key(row)
            cells.append(f"{value:.3g}" if isinstance(value, float)
                         else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results):
    meta = results["machine"]
    parts = [
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['cores']} cores, {meta['platform']}; "
        f"Python {meta['python']}, TF {meta['tensorflow']}, Keras "
        f"{meta['keras']} ({'tf_keras' if meta['legacy'] else 'Keras 3'}); "
        f"TF_CPU_ALLOCATOR_USE_BFC={meta['cpu_allocator_use_bfc']}  ",
        f"Load average (1/5/15 min) before: {meta['load_before']}, after: "
        f"{meta['load_after']}; peak memory (max RSS) "
        f"{meta['max_rss_gb']:.1f} GB; wall time {meta['seconds']:.0f} s ("
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds
                    in results["case_seconds"].items()) + ")",
        "", "### Targets", "",
        _table(results["targets"], (("target", "target"),
                                    ("measured", "measured"),
                                    ("met", lambda r: "yes" if r["met"]
                                     else "**no**"))),
    ]
    if results.get("penalty"):
        parts += ["", "### Penalty throughput (GB/s of weights; floor "
                  "fraction = median per-round ratio to the read floor)", "",
                  _table(results["penalty"], (
                      ("params", "params"), ("mode", "mode"),
                      ("what", "what"), ("contender", "contender"),
                      ("ms", "median_ms"), ("GB/s", "gb_per_s"),
                      ("floor fraction", "floor_fraction"),
                      ("page faults/call", "page_faults")))]
    if results.get("priors"):
        parts += ["", "### Priors, value+gradient", "",
                  _table(results["priors"], (
                      ("params", "params"), ("mode", "mode"),
                      ("contender", "contender"), ("ms", "median_ms"),
                      ("x tfreg L2", "vs_tfreg_l2"),
                      ("page faults/call", "page_faults")))]
    if results.get("train_step"):
        parts += ["", "### Train step (ms per `train_on_batch`)", "",
                  _table(results["train_step"], (
                      ("model", "model"), ("params", "params"),
                      ("reg", "regularizer"), ("jit", "jit"),
                      ("rounds", "rounds"),
                      ("none", "none_ms"), ("Keras", "keras_ms"),
                      ("tfreg", "tfreg_ms"),
                      ("Keras overhead", "keras_overhead_ms"),
                      ("tfreg overhead", "tfreg_overhead_ms"),
                      ("overhead ratio", "overhead_ratio"),
                      ("control overhead", "control_overhead_ms"),
                      ("tfreg/Keras step", "tfreg_vs_keras_step"),
                      ("Keras penalty alone", "keras_penalty_ms"),
                      ("tfreg penalty alone", "tfreg_penalty_ms"),
                      ("penalty ratio", "penalty_ratio"),
                      ("page faults/step none/Keras/tfreg",
                       lambda r: "/".join(f"{n:.0f}" for n in
                                          r["page_faults"].values()))))]
    if results.get("first_step"):
        parts += ["", "### Time to first step (s, jit, L2 on every layer; "
                  "StudentT(3) for tfreg StudentT)", "",
                  _table(results["first_step"], (
                      ("depth", "depth"), ("contender", "contender"),
                      ("s", "median_s"), ("x none", "vs_none"),
                      ("x none per round", lambda r: " ".join(
                          f"{x:.2f}" for x in r["rounds_vs_none"]))))]
    return "\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4M params only and fewer rounds (< 3 minutes).")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"Comma-separated subset of {CASES}.")
    parser.add_argument("--rounds", type=int, default=None,
                        help="Timed rounds per case (default: 3 quick, 7 "
                             "full; first_step 1 quick, 3 full); train_step "
                             "adds rounds up to 5 s (quick) or 15 s per "
                             "model.")
    parser.add_argument("--json", default="bench.json")
    parser.add_argument("--markdown", default="bench.md")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Received: {args.rounds}")
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"Unknown case(s) {unknown}. Expected a subset of {CASES}.")

    start = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = {"case_seconds": {}}

    def run_case(name, bench):
        begin = time.time()
        results[name] = bench()
        results["case_seconds"][name] = round(time.time() - begin, 1)
        _write(results, args, argv, load_before, start)

    modes = (False, True)
    rounds = args.rounds or (3 if args.quick else 7)
    if "penalty" in cases:
        sizes = (4_000_000,) if args.quick else (4_000_000, 16_000_000,
                                                 64_000_000)
        run_case("penalty", lambda: bench_penalty(
            sizes, rounds, modes, with_priors=not args.quick))
    if "priors" in cases:
        run_case("priors", lambda: bench_priors(
            1_000_000 if args.quick else 16_000_000, rounds, modes,
            # Compiling 16 contenders x 50 tensors under XLA takes minutes.
            num_tensors=10 if args.quick else 50))
    if "train_step" in cases:
        if args.quick:
            plan = (("mlp", "L2", True), ("deep128", "L1L2", False))
        else:
            plan = tuple((m, r, j) for m in MODELS for r in ("L2", "L1L2")
                         for j in (False, True))
        run_case("train_step", lambda: bench_train_step(
            plan, rounds, repeat=2 if args.quick else 4,
            seconds=5 if args.quick else 15))
    if "first_step" in cases:
        run_case("first_step", lambda: bench_first_step(
            (32,) if args.quick else (16, 32, 64, 128),
            rounds=args.rounds or (1 if args.quick else 3)))
    print(_write(results, args, argv, load_before, start))


def _write(results, args, argv, load_before, start):
    """Writes the JSON and Markdown of what has run so far; returns the text."""
    results["targets"] = targets(results)
    results["machine"] = {
        "command": "python tools/bench.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
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
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    text = markdown(results)
    with open(args.markdown, "w") as f:
        f.write(text)
    return text


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
