"""The optimizer case: `tfreg.optimizers.Regularized` against the loss path."""

import gc
import time

import tensorflow as tf

import tfreg
from tfreg import _keras
from tfreg import optimizers as tfreg_optimizers
from tools.bench.harness import (
    Case, find, interleave, Limit, median, mode_name, print_rows, rotated,
    round_ratios, rounds_within, size_name, Target)
from tools.bench.workloads import (
    closed_form_priors, deep, mlp, NOISE, train_step, weights)
from tools.bench.writer import table

keras = _keras.keras


def _optimizer_mlp(regularizer, settings):
    """The train-step case's MLP at batch 256."""
    return mlp(regularizer, settings, batch=256)


def _wrapped(mode, inner, metric="adaptive"):
    return lambda model: tfreg_optimizers.Regularized(
        inner(), mode=mode, model=model, metric=metric)


def _optimizer_plan(settings):
    """(model, jit, inner optimizer, {contender: (regularizer, optimizer)})."""
    adam = lambda: keras.optimizers.Adam(1e-3)
    sgd = lambda: keras.optimizers.SGD(1e-3)
    plain = lambda inner: lambda model: inner()
    mlp_plan = ("mlp", True, {
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
    deep_plan = ("deep128", False, {
        "none": (None, plain(sgd)),
        "Keras L1L2 (loss)": (keras.regularizers.L1L2(1e-5, 1e-4),
                              plain(sgd)),
        "tfreg L1L2 proximal": (tfreg.L1L2(1e-5, 1e-4),
                                _wrapped("proximal", sgd)),
        "control": (None, plain(sgd)),
    })
    return settings.pick(full=(mlp_plan, deep_plan))


_OPTIMIZER_MODELS = {"mlp": _optimizer_mlp, "deep128": deep}


def _run_optimizer_steps(settings):
    rounds = settings.rounds(full=7, quick=3)
    repeat = settings.pick(full=4, quick=2, tiny=1)
    seconds = settings.pick(full=15, quick=5, tiny=0)
    rows = []
    for model_name, jit, plan in _optimizer_plan(settings):
        def build(regularizer, model_name=model_name):
            return _OPTIMIZER_MODELS[model_name](regularizer, settings)
        contenders = {name: train_step(build, regularizer, jit,
                                        optimizer=optimizer)
                      for name, (regularizer, optimizer) in plan.items()}
        times = interleave(
            contenders, rounds_within(contenders, rounds, repeat, seconds),
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
    weights (quick: 4M): each closed-form prior's gradient against L2's."""
    # A compile's time grows with the tensors: a quick run compiles 10 per
    # contender, not 50.
    num_params = settings.pick(full=16_000_000, quick=4_000_000, tiny=20_000)
    variables = weights(num_params, settings.pick(full=50, quick=10, tiny=2))
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
        for name in rotated(list(contenders), index):
            keras.backend.clear_session()
            gc.collect()
            regularizer, optimizer = contenders[name]
            start = time.perf_counter()
            train_step(lambda r: deep(r, settings, depth=depth),
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
            ("params", lambda r: size_name(r["params"])),
            ("penalty", "contender"), ("graph ms", "graph_ms"),
            ("graph x L2", "graph_vs_l2"), ("XLA ms", "xla_ms"),
            ("XLA x L2", "xla_vs_l2")))
        + "\n\nBuild + compile + first `train_on_batch` (jit), seconds:\n\n"
        + table(first, (("depth", "depth"), ("contender", "contender"),
                        ("s", "s"), ("x none", "vs_none"))))


def _overhead(rows, model, contender):
    found = find(rows, kind="step", model=model, contender=contender)
    return found[0]["overhead_ms"] if found else float("nan")


OPTIMIZER_GOALS = {
    "adamw": "MLP jit: decoupled L2 overhead <= 1.1x Keras AdamW's",
    "l1": "MLP jit: proximal L1 overhead <= 0.3x Keras L1 through the loss",
    "deep": ("128-layer stack, graph: proximal L1L2 overhead <= 0.5x Keras "
             "L1L2 through the loss"),
    "first": "first jit step, 128-layer stack, proximal L2: <= 1.2x none",
    "adaptive": ("MLP jit, Adam: proximal L1 overhead in Adam's metric <= "
                 "1.1x in the scalar metric"),
    "group": "MLP jit, Adam: proximal GroupLasso overhead <= 2% of the step",
}


def _goal_priors(params):
    return (f"decoupled closed-form prior, {size_name(params)} weights: "
            "<= 1.3x L2's")


def targets_optimizer(rows, settings):
    del settings
    out = []

    def ratio(model, ours, theirs):
        return (_overhead(rows, model, ours)
                / _overhead(rows, model, theirs))
    if find(rows, kind="step", model="mlp"):
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
        none = find(rows, kind="step", model="mlp", contender="none")
        value = (_overhead(rows, "mlp", "tfreg GroupLasso proximal")
                 / none[0]["ms"])
        out.append(Target(OPTIMIZER_GOALS["group"],
                          "tfreg GroupLasso proximal", "", value,
                          value <= 0.02))
    if find(rows, kind="step", model="deep128"):
        value = ratio("deep128", "tfreg L1L2 proximal", "Keras L1L2 (loss)")
        out.append(Target(OPTIMIZER_GOALS["deep"], "tfreg L1L2 proximal", "",
                          value, value <= 0.5))
    for row in find(rows, kind="priors"):
        if row["contender"] != "L2":
            out.append(Target(_goal_priors(row["params"]), row["contender"],
                              mode_name(row["jit"]), row["vs_l2"],
                              row["vs_l2"] <= 1.3))
    for row in find(rows, kind="first_step"):
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
          "decoupled update of the closed-form priors on 16M weights (4M in "
          "a quick run), and "
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
