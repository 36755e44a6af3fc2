"""The penalty case: GB/s of a penalty against a read floor."""

import tensorflow as tf

from tools.bench.harness import (
    Case, find, interleave, Limit, median, mode_name, page_faults_per_call,
    print_rows, round_ratios, size_name, Target)
from tools.bench.workloads import (
    closed_form_priors, GOAL_NOT_SLOWER, LOGS, NOISE, penalty_contenders,
    penalty_fn, weights)
from tools.bench.writer import table


def _read_floor(v):
    return tf.reduce_sum(v)


def run_penalty(settings):
    sizes = settings.pick(full=(4_000_000, 16_000_000, 64_000_000),
                          quick=(4_000_000,), tiny=(20_000,))
    # Compiling a contender costs time per tensor (an XLA value+gradient
    # over 50 tensors ~6 CPU s, over 20 ~2.5), a timed call ~5 ms: a quick
    # run compiles 20 tensors (still each below `total`'s 512K elements, as
    # 50 are) and buys rounds with the time saved.
    num_tensors = settings.pick(full=50, quick=20, tiny=2)
    # Quick runs leave the priors to their own case (time).
    with_priors = settings.pick(full=True, quick=False)
    rounds = settings.rounds(full=7, quick=21)
    rows = []
    for num_params in sizes:
        variables = weights(num_params, num_tensors)
        params = sum(v.shape.num_elements() for v in variables)
        regularizers = {}
        for name, (theirs, ours) in penalty_contenders().items():
            regularizers[f"keras {name}"] = theirs
            regularizers[f"tfreg {name}"] = ours
        if with_priors:
            for name, prior in closed_form_priors().items():
                regularizers[f"tfreg {name}"] = prior
        for jit in (False, True):
            # One floor for both: it is the value alone either way.
            floor_fn = penalty_fn(variables, _read_floor, False, jit)
            for gradient in (False, True):
                contenders = {"read floor": floor_fn}
                for name, regularizer in regularizers.items():
                    contenders[name] = penalty_fn(
                        variables, regularizer, gradient, jit)
                times = interleave(contenders, rounds, warmup=2)
                floor = times["read floor"]
                first = len(rows)
                for name, samples in times.items():
                    if name == "read floor" and gradient:
                        continue
                    rows.append({
                        "params": params, "tensors": len(variables),
                        "mode": mode_name(jit),
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
        f"{size_name(r['params'])} {r['mode']} {r['gb_per_s']:.1f} GB/s"
        for r in floors) + ". Cells: floor fraction (median per-round "
        "ratio of the floor's time to the contender's).")
    lines.append("")
    table_rows = []
    for params in sorted({r["params"] for r in rows}):
        names = list(dict.fromkeys(r["contender"] for r in rows
                                   if r["params"] == params
                                   and r["contender"] != "read floor"))
        for name in names:
            cells = {"params": size_name(params), "contender": name}
            faults = 0.0
            for mode, what in columns:
                match = find(rows, params=params, contender=name, mode=mode,
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


def targets_penalty(rows, settings):
    del settings
    out = []
    for row in rows:
        name = row["contender"]
        if not name.startswith("tfreg"):
            continue
        condition = f"{size_name(row['params'])} {row['mode']}"
        goal, bound = ((_GOAL_VALUE, VALUE_FLOOR) if row["what"] == "value"
                       else (_GOAL_GRADIENT, GRADIENT_FLOOR))
        out.append(Target(goal, name, condition, row["floor_fraction"],
                          row["floor_fraction"] >= bound))
    for row in rows:
        name = row["contender"]
        if not name.startswith("tfreg"):
            continue
        twin = find(rows, contender="keras" + name[len("tfreg"):],
                     mode=row["mode"], what=row["what"], params=row["params"])
        if twin:
            ratio = twin[0]["median_ms"] / row["median_ms"]
            out.append(Target(GOAL_NOT_SLOWER, f"{name} {row['what']}",
                              f"{size_name(row['params'])} {row['mode']}", ratio,
                              ratio >= 1.0))
    return out


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
        GOAL_NOT_SLOWER: (NOISE, ACCURATE_SUMS),
    })
