"""The outcomes case: what the proximal optimizer and shrink give."""

import numpy as np

from tfreg import _keras
from tools.bench.harness import Case, find, print_rows, Target
from tools.bench.workloads import example, train_digits
from tools.bench.writer import cell, table

keras = _keras.keras


def run_outcomes(settings):
    """Sparsity of examples/sparse_training.py's runs (trained by
    `train_digits`) and the shrinking of examples/residual_cnn_shrink.py's
    `measure`."""
    sparse = example("sparse_training")
    runs = settings.pick(full=sparse.RUNS, tiny=sparse.RUNS[:1] + (
        sparse.RUNS[-1],))
    # A quick run trains the MLP for a third of the epochs (the same
    # verdicts); the CNN keeps its 40, which its shrink needs (at 20 it
    # shrank by 1%).
    epochs = settings.pick(full=150, quick=50, tiny=1)
    split = sparse.data()
    rows = []
    for name, regularizer, through in runs:
        accuracy, kernel = train_digits(regularizer, through, epochs, split)
        rows.append({"kind": "sparsity", "epochs": epochs, "run": name,
                     "through": through, "accuracy": accuracy,
                     "zeros": int(np.sum(kernel == 0)), "weights": kernel.size,
                     "zero_units": int(np.sum(np.all(kernel == 0, axis=0))),
                     "units": kernel.shape[1]})
        keras.backend.clear_session()
    print_rows(rows, ("run", "accuracy", "zeros", "zero_units"))
    shrink = example("residual_cnn_shrink")
    epochs = settings.pick(full=40, tiny=1)
    outcome = shrink.measure(epochs,
                             settings.pick(full=shrink.STRENGTHS,
                                           quick=(0.02,), tiny=(0.02,)))
    base = outcome["cost"]
    for result in outcome["results"]:
        row = {
            "kind": "shrink", "strength": result["strength"],
            "epochs": epochs,
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
    sparsity_rows, shrink_rows = (find(rows, kind=kind)
                                  for kind in ("sparsity", "shrink"))
    sparsity = table(sparsity_rows, (
        ("run", "run"), ("val accuracy", "accuracy"),
        ("exact zeros", lambda row: f"{row['zeros']} / {row['weights']}"),
        ("all-zero units",
         lambda row: f"{row['zero_units']} / {row['units']}")))
    shrink = table(shrink_rows, (
        ("GroupLasso", "strength"),
        ("val accuracy (unregularized)",
         lambda row: f"{row['tuned_accuracy']:.4f} ({row['accuracy']:.4f})"),
        ("params", lambda row: f"{row['params']:,} -> {row['shrunk_params']:,}"),
        ("FLOPs", lambda row: f"{row['flops']:,} -> {row['shrunk_flops']:,}"),
        ("latency shrunk / original",
         lambda row: cell(row["latency_ratio"]) if row["chosen"] else ""),
        ("SavedModel KiB",
         lambda row: (f"{row['saved_kib']:.0f} -> {row['shrunk_saved_kib']:.0f}"
                      if row["chosen"] else ""))))
    return ("First table: the hidden kernel of the digits MLP (64-64-10, "
            f"SGD 0.1 with momentum, {sparsity_rows[0]['epochs']} epochs) "
            "after training. Second: a residual CNN on digits "
            f"({shrink_rows[0]['epochs']} epochs) after coupled group "
            "lasso through the "
            "proximal optimizer, `tfreg.shrink` (outputs equal the pruned "
            "model's, checked) and fine-tuning; latency and SavedModel size "
            "for the strongest strength within 1 point.\n\n" + sparsity
            + "\n\n" + shrink)


OUTCOME_GOALS = {
    "zeros": "proximal run: exact zeros where the same penalty through the "
             "loss leaves at most 1% of the weights exactly 0, val accuracy "
             ">= best loss run - 1 point (accuracy gap, points)",
    "shrink": "shrunk residual CNN: >= 2x fewer parameters at val accuracy "
              "within 1 point of unregularized (parameter ratio)",
}


def targets_outcomes(rows, settings):
    out = []
    sparsity = find(rows, kind="sparsity")
    loss_runs = [row for row in sparsity if row["through"] == "loss"]
    best = max(row["accuracy"] for row in loss_runs) if loss_runs else None
    # A loss path's rare exact zeros are weights its steps happened to
    # cancel; the twin is the run of the same penalty through the loss.
    twins = {row["run"].replace("loss ", "", 1): row for row in loss_runs}
    for row in sparsity:
        if row["through"] == "proximal" and best is not None:
            gap = 100 * (best - row["accuracy"])
            twin = twins.get(row["run"].replace("proximal ", "", 1))
            twin_zeros = twin["zeros"] if twin else 0
            out.append(Target(
                OUTCOME_GOALS["zeros"],
                f"{row['run']} ({row['zeros']} zeros; through the loss "
                f"{twin_zeros if twin else 'not run'})", "", gap,
                gap <= 1 and row["zeros"] > twin_zeros
                and twin_zeros <= 0.01 * row["weights"]))
    for row in find(rows, kind="shrink", chosen=True):
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
