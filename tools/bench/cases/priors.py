"""The priors case: each closed-form prior against TFP's and L2."""

import tensorflow as tf

import tfreg
from tools.bench.harness import (
    Case, find, interleave, median, mode_name, print_rows, round_ratios,
    size_name, Target)
from tools.bench.workloads import closed_form_priors, LOGS, penalty_fn, weights
from tools.bench.writer import table


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
    # Tracing and compiling cost time per tensor (16 contenders x 50 tensors
    # under XLA take minutes); a quick run's 5 keep one Conv-shaped kernel.
    num_tensors = settings.pick(full=50, quick=5, tiny=2)
    rounds = settings.rounds(full=7, quick=11)
    variables = weights(num_params, num_tensors=num_tensors, seed=1)
    params = sum(v.shape.num_elements() for v in variables)
    twins = tfp_twins()
    rows = []
    # At tiny scale graph mode only: XLA compiles of 15 contenders take long.
    for jit in settings.pick(full=(False, True), tiny=(False,)):
        contenders = {"tfreg L2": penalty_fn(variables, tfreg.L2(0.01), True,
                                              jit)}
        for name, prior in closed_form_priors().items():
            contenders[f"tfreg {name}"] = penalty_fn(variables, prior, True,
                                                      jit)
            distribution = twins[name]()
            contenders[f"tfp {name}"] = penalty_fn(
                variables,
                lambda v, d=distribution: -tf.reduce_sum(d.log_prob(v)),
                True, jit)
        contenders["tfreg Prior(tfd.Normal)"] = penalty_fn(
            variables, tfreg.priors.Prior(twins["Normal"]()), True, jit)
        # What one log per weight costs, value only.
        contenders["sum(log1p(w^2)), value only"] = penalty_fn(
            variables, lambda v: tf.reduce_sum(tf.math.log1p(tf.square(v))),
            False, jit)
        times = interleave(contenders, rounds, warmup=2)
        base = times["tfreg L2"]
        for name, samples in times.items():
            rows.append({
                "params": params, "tensors": len(variables),
                "mode": mode_name(jit), "contender": name,
                "median_ms": 1e3 * median(samples),
                "vs_tfreg_l2": median(round_ratios(samples, base)),
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
            match = find(rows, contender=name, mode=mode)
            cells[f"{mode} ms"] = match[0]["median_ms"] if match else ""
            cells[f"{mode} x"] = match[0]["vs_tfreg_l2"] if match else ""
        table_rows.append(cells)
    return (f"{size_name(rows[0]['params'])} params in {rows[0]['tensors']} "
            "tensors, value+gradient; `x L2` is the median per-round ratio "
            "to tfreg L2.\n\n"
            + table(table_rows, [("contender", "contender")] + [
                column for mode in modes for column in (
                    (f"{mode} ms", f"{mode} ms"),
                    (f"{mode} x L2", f"{mode} x"))]))


PRIOR_BOUND = 1.3


def _goal_priors(rows):
    return (f"value+grad <= {PRIOR_BOUND}x tfreg L2's "
            f"({size_name(rows[0]['params'])} params)") if rows else ""


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
