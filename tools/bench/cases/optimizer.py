"""The optimizer case: `tfreg.optimizers.Regularized` against the loss path."""

import gc
import math
import time

import numpy as np
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


def _plain(loss=None, weight_decay=None):
    """The shared optimizer itself; `loss`: a Keras regularizer added to
    the loss on every kernel; `weight_decay`: Keras' own decay (AdamW)."""
    return lambda model, inner: (inner, loss, weight_decay)


def _wrapped(mode, regularizer, metric="adaptive"):
    return lambda model, inner: (tfreg_optimizers.Regularized(
        inner, mode=mode, regularizer=regularizer, model=model,
        metric=metric), None, None)


def _optimizer_plan(settings):
    """(model, jit, whole step?, inner optimizer, (rounds, seconds),
    {contender: (model, inner) -> (optimizer, loss regularizer, weight
    decay)}).

    The MLP's loss-path penalties cost in its backward pass: timed in whole
    steps; the optimizer's own penalties only in its update: timed in the
    update alone, whose noise is a tenth of the whole step's.
    """
    adam = lambda: keras.optimizers.Adam(1e-3)
    sgd = lambda: keras.optimizers.SGD(1e-3)
    mlp_loss = ("mlp", True, True, adam, settings.pick(
        full=(100, 40), quick=(30, 3)), {
            "none": _plain(),
            "Keras L2 (loss)": _plain(loss=keras.regularizers.L2(1e-4)),
            "Keras L1 (loss)": _plain(loss=keras.regularizers.L1(1e-5)),
            "control": _plain(),
        })
    mlp_update = ("mlp", True, False, adam, settings.pick(
        full=(400, 60), quick=(150, 6)), {
            "none": _plain(),
            # keras.optimizers.AdamW is Adam with the base optimizer's decay.
            "Keras AdamW": _plain(weight_decay=2e-4),
            "tfreg L2 decoupled": _wrapped("decoupled", tfreg.L2(1e-4)),
            "tfreg L1 proximal": _wrapped("proximal", tfreg.L1(1e-5)),
            "tfreg L1 proximal, scalar metric": _wrapped(
                "proximal", tfreg.L1(1e-5), "scalar"),
            "tfreg GroupLasso proximal": _wrapped("proximal",
                                                  tfreg.GroupLasso(1e-5)),
            "control": _plain(),
        })
    deep = ("deep128", False, True, sgd, settings.pick(
        full=(400, 30), quick=(100, 2)), {
            "none": _plain(),
            "Keras L1L2 (loss)": _plain(
                loss=keras.regularizers.L1L2(1e-5, 1e-4)),
            "tfreg L1L2 proximal": _wrapped("proximal",
                                            tfreg.L1L2(1e-5, 1e-4)),
            "control": _plain(),
        })
    return (mlp_loss, mlp_update, deep)


_OPTIMIZER_MODELS = {"mlp": lambda settings: mlp(None, settings, batch=256),
                     "deep128": lambda settings: deep(None, settings)}


def _shared_steps(model_name, jit, whole, inner, plan, settings):
    """One compiled training step per contender, all on one model and one
    optimizer state (Regularized shares its wrapped optimizer's slots and
    iterations), so that no contender gets other memory or a first build.

    whole: each step is the network's forward, backward and update (the
    loss path's penalty included); else the update alone, from fixed
    random gradients.
    Each step is traced now, with its own weight decay set on the shared
    optimizer (read when traced) and unset after.
    """
    keras.utils.set_random_seed(0)
    model, input_shape = _OPTIMIZER_MODELS[model_name](settings)
    variables = model.trainable_variables
    kernels = [v for v in variables if "kernel" in v.name]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=input_shape).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, size=(input_shape[0],)))
    fixed = [tf.constant(1e-3 * rng.normal(size=v.shape).astype(np.float32))
             for v in variables]
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)
    inner = inner()
    inner.build(variables)

    def compiled(optimizer, loss_regularizer, weight_decay):
        def step():
            if not whole:
                loss, gradients = tf.zeros(()), fixed
            else:
                with tf.GradientTape() as tape:
                    loss = cross_entropy(y, model(x, training=True))
                    if loss_regularizer is not None:
                        loss += tf.add_n([loss_regularizer(k)
                                          for k in kernels])
                gradients = tape.gradient(loss, variables)
            if _keras.LEGACY:
                optimizer.apply_gradients(zip(gradients, variables))
            else:
                optimizer.apply(gradients, variables)
            return loss
        optimizer.build(variables)
        inner.weight_decay = weight_decay
        function = tf.function(step, jit_compile=jit, autograph=False)
        function()
        inner.weight_decay = None
        return lambda: function().numpy()

    return {name: compiled(*contender(model, inner))
            for name, contender in plan.items()}


def _cpu_interleave(contenders, rounds):
    """Process CPU seconds per call, rounds rotated as `interleave`'s: the
    machine's other processes add wall time to whichever contender they
    interrupt, but not CPU time."""
    times = {name: [] for name in contenders}
    for index in range(rounds):
        for name in rotated(list(contenders), index):
            start = time.process_time()
            contenders[name]()
            times[name].append(time.process_time() - start)
    return times


def _median_interval(values, z=1.96):
    """The median's distribution-free 95% interval: the order statistics
    n/2 -+ z sqrt(n)/2 (a Binomial(n, 1/2) count below the median);
    (-inf, inf) when n is too small for one."""
    ordered = sorted(values)
    n = len(ordered)
    low = math.floor(n / 2 - z * math.sqrt(n) / 2)
    high = math.ceil(1 + n / 2 + z * math.sqrt(n) / 2)
    if low < 1 or high > n:
        return -math.inf, math.inf
    return ordered[low - 1], ordered[high - 1]


def _run_optimizer_steps(settings):
    rows = []
    for model_name, jit, whole, inner, (rounds, seconds), plan in (
            _optimizer_plan(settings)):
        steps = _shared_steps(model_name, jit, whole, inner, plan, settings)
        times = _cpu_interleave(steps, rounds_within(
            steps, settings.rounds(rounds), 1, settings.pick(
                seconds, tiny=0)))
        none = times["none"]
        for name, samples in times.items():
            overheads = [1e3 * (a - b) for a, b in zip(samples, none)]
            low, high = _median_interval(overheads)
            rows.append({
                "kind": "step", "model": model_name, "jit": jit,
                "whole": whole, "contender": name, "rounds": len(none),
                "ms": 1e3 * median(samples),
                "overhead_ms": median(overheads),
                "overhead_low_ms": low, "overhead_high_ms": high,
            })
        print_rows(rows[-len(plan):], ("model", "contender", "ms",
                                       "overhead_ms", "overhead_low_ms",
                                       "overhead_high_ms"))
        keras.backend.clear_session()
    return rows


def _run_decoupled_priors(settings):
    """The decoupled update alone (no model, no optimizer step) on ~16M
    weights (quick: 4M): each closed-form prior's gradient against L2's."""
    # A compile's time grows with the tensors: a quick run compiles 5 per
    # contender (one Conv-shaped), not 50.
    num_params = settings.pick(full=16_000_000, quick=4_000_000, tiny=20_000)
    variables = weights(num_params, settings.pick(full=50, quick=5, tiny=2))
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
                  "tfreg L2 proximal": (
                      tfreg.L2(1e-4),
                      lambda model: tfreg_optimizers.Regularized(
                          sgd(), mode="proximal", model=model))}
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


def _overhead_cell(row):
    interval = (f"{row['overhead_ms']:+.3g} ({row['overhead_low_ms']:+.3g}"
                f"..{row['overhead_high_ms']:+.3g})")
    return (f"within noise: {interval}" if _within_noise(row)
            else interval)


def table_optimizer(rows):
    steps = [row for row in rows if row["kind"] == "step"]
    priors = [row for row in rows if row["kind"] == "priors"]
    first = [row for row in rows if row["kind"] == "first_step"]
    none = {(row["model"], row["whole"]): row["ms"] for row in steps
            if row["contender"] == "none"}
    return (
        "Process CPU ms per compiled call: the whole training step "
        "(forward, backward, update) or the update alone (from fixed "
        "gradients), "
        "every contender its own function on one shared model and optimizer "
        "state, traced and warmed before the rotated rounds; overhead = "
        "median over rounds of the call minus the same round's unregularized "
        "call, with its 95% interval (control: a second unregularized "
        "function, the noise; an interval that holds 0 reads \"within "
        "noise\"; a target's ratio needs both overheads' intervals above 0 "
        "and names its own interval from theirs). On the MLP, penalties "
        "through the loss cost in the backward pass and are timed in whole "
        "steps, "
        "those in the optimizer in the update alone; GroupLasso's share is "
        "of the unregularized whole step.\n\n"
        + table([dict(row, none_ms=none[row["model"], row["whole"]])
                 for row in steps if row["contender"] != "none"], (
                     ("model", "model"),
                     ("jit", lambda r: "yes" if r["jit"] else "no"),
                     ("call", lambda r: "step" if r["whole"] else "update"),
                     ("rounds", "rounds"), ("unregularized CPU ms", "none_ms"),
                     ("contender", "contender"), ("CPU ms", "ms"),
                     ("overhead ms", _overhead_cell)))
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


def _step_row(rows, model, contender):
    found = find(rows, kind="step", model=model, contender=contender)
    return found[0] if found else None


def _within_noise(row):
    """The overhead's interval holds 0."""
    return row["overhead_low_ms"] <= 0 <= row["overhead_high_ms"]


def _not_above_zero(row):
    """No row, or an overhead whose interval reaches 0 or below."""
    return row is None or row["overhead_low_ms"] <= 0


OPTIMIZER_GOALS = {
    "adamw": "MLP jit: decoupled L2 overhead <= 1.1x Keras AdamW's",
    "l1": "MLP jit: proximal L1 overhead <= 0.3x Keras L1 through the loss",
    "deep": ("128-layer stack, graph: proximal L1L2 overhead <= 0.5x Keras "
             "L1L2 through the loss"),
    "first": "first jit step, 128-layer stack, proximal L2: <= 1.2x none",
    "adaptive": ("MLP jit, Adam: the update with proximal L1 in Adam's "
                 "metric <= 1.1x the update in the scalar metric (CPU ms per "
                 "call)"),
    "group": "MLP jit, Adam: proximal GroupLasso overhead <= 2% of the step",
}


def _goal_priors(params):
    return (f"decoupled closed-form prior, {size_name(params)} weights: "
            "<= 1.3x L2's")


def targets_optimizer(rows, settings):
    del settings
    out = []

    def ratio(goal, bound, model, ours, theirs):
        """Our overhead over theirs, its interval in the subject; where
        either overhead's interval reaches 0 or below, no ratio (NaN,
        unmet) and a subject that says so."""
        noisy = [name for name in (ours, theirs)
                 if _not_above_zero(_step_row(rows, model, name))]
        if noisy:
            return Target(goal, f"{ours} ({' and '.join(noisy)}: overhead "
                          "not above 0, no ratio)", "", float("nan"), False)
        mine, their = _step_row(rows, model, ours), _step_row(
            rows, model, theirs)
        value = mine["overhead_ms"] / their["overhead_ms"]
        low = mine["overhead_low_ms"] / their["overhead_high_ms"]
        high = mine["overhead_high_ms"] / their["overhead_low_ms"]
        return Target(goal, f"{ours} (interval {low:.2g}..{high:.2g})", "",
                      value, value <= bound)

    def call_ratio(goal, bound, model, ours, theirs):
        """Our call's CPU ms over theirs, each the unregularized call plus
        its median overhead; the interval from the overheads' intervals."""
        mine, their = _step_row(rows, model, ours), _step_row(
            rows, model, theirs)
        (none,) = find(rows, kind="step", model=model, whole=mine["whole"],
                       contender="none")

        def call(row, end):
            return none["ms"] + row[f"overhead{end}_ms"]
        value = call(mine, "") / call(their, "")
        low = call(mine, "_low") / call(their, "_high")
        high = call(mine, "_high") / call(their, "_low")
        return Target(goal, f"{ours} (interval {low:.3g}..{high:.3g})", "",
                      value, value <= bound)
    if find(rows, kind="step", model="mlp"):
        out.append(ratio(OPTIMIZER_GOALS["adamw"], 1.1, "mlp",
                         "tfreg L2 decoupled", "Keras AdamW"))
        out.append(ratio(OPTIMIZER_GOALS["l1"], 0.3, "mlp",
                         "tfreg L1 proximal", "Keras L1 (loss)"))
        out.append(call_ratio(OPTIMIZER_GOALS["adaptive"], 1.1, "mlp",
                         "tfreg L1 proximal",
                         "tfreg L1 proximal, scalar metric"))
        step = find(rows, kind="step", model="mlp", whole=True,
                    contender="none")[0]
        value = (_step_row(rows, "mlp", "tfreg GroupLasso proximal")[
            "overhead_ms"] / step["ms"])
        out.append(Target(OPTIMIZER_GOALS["group"],
                          "tfreg GroupLasso proximal", "", value,
                          value <= 0.02))
    if find(rows, kind="step", model="deep128"):
        out.append(ratio(OPTIMIZER_GOALS["deep"], 0.5, "deep128",
                         "tfreg L1L2 proximal", "Keras L1L2 (loss)"))
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
    limits={OPTIMIZER_GOALS["group"]: (Limit(
        "A group's norm before its scale", (
            "The block soft threshold scales a group only after its norm is "
            "known, so XLA:CPU runs a reduction over each kernel (its "
            "squares written out, then summed) and a scaling pass on top of "
            "Adam's own loop; in Adam's metric, one more reduction of "
            "sqrt(v) for the group's step: at least one read and write of "
            "every kernel more than Adam's update, a memory-bound pass no "
            "fusion removes (docs/optimizers.md, Cost).")),),
            "MLP jit": (NOISE,), "128-layer": (NOISE,),
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
