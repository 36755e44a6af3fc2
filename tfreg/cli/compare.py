"""`tfreg compare`: which regularizer, and how strong, for a dataset.

Trains the same small MLP once per (regularizer, strength) with
`jit_compile=True`, and reports validation loss and metric, the fraction of
near-zero weights, the penalty's share of the loss and the step time. Writes a
Markdown report, plots, a JSON of every number and the best model as a
SavedModel (reloaded and checked) to the output directory.
"""

import json
import os
import sys
import time

import tensorflow as tf

from tfreg import _keras
from tfreg.cli import UsageError
from tfreg.cli import data as data_lib
from tfreg.cli import report
from tfreg.cli import sweep
from tfreg.cli import training

keras = _keras.keras


def run(data=None, target=None, task="auto", regularizers=None, epochs=8,
        seed=0, out="compare-report", stdout=None, stderr=None, argv=None):
    """Runs the comparison; returns the summary dict written to results.json.

    Raises `UsageError` for bad input (files, columns, names, options).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    wall_start = time.perf_counter()
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"--epochs must be an int >= 1; got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"--seed must be an int >= 0; got {seed!r}")
    families = sweep.parse_regularizers(regularizers)
    datasets = data_lib.load_datasets(data, target, task, seed)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out}: {error}") from None

    # Seeds make runs repeatable: XLA:CPU executables are deterministic.
    # `tf.config.experimental.enable_op_determinism()` is deliberately not
    # called: Keras 3 then silently trains with jit_compile=False.
    keras.utils.set_random_seed(seed)

    plan, notes = [], []
    for dataset in datasets:
        runs, skipped = sweep.candidates(families, len(dataset.x_train))
        by_family = {}
        for candidate in runs:
            by_family.setdefault(candidate.family, []).append(candidate)
        plan += [(dataset, family, group)
                 for family, group in by_family.items()]
        notes += [note for note in skipped if note not in notes]
    for note in notes:
        stderr.write(f"note: {note}\n")
    for dataset in datasets:
        stderr.write(f"data: {dataset.describe()}\n")

    tracker = training.Tracker(sum(len(group) for _, _, group in plan), epochs,
                      len(plan), stream=stderr)
    results, kernels, best, best_models = [], {}, {}, {}
    for dataset, family, group in plan:
        trained, model = training.train(dataset, family, group, epochs, seed, tracker)
        for tower, (candidate, (result, values)) in enumerate(
                zip(group, trained)):
            results.append(result)
            kernels[(dataset.name, family, candidate.setting)] = values
            current = best.get(dataset.name)
            if current is None or result["val_loss"] < current["val_loss"]:
                best[dataset.name] = result
                best_models[dataset.name] = training.standalone(
                    dataset, model, tower, candidate, seed)

    rows = report.table_rows(results, best)
    stdout.write(report.format_text_table(rows) + "\n")
    exports = {}
    for dataset in datasets:
        path = os.path.join(os.path.abspath(out), f"model-{dataset.name}")
        exports[dataset.name] = export = training.export_and_check(
            best_models[dataset.name], dataset, path)
        status = ("predictions match" if export["predictions_match"]
                  else "PREDICTIONS DIFFER")
        if "regularization_loss_matches" in export:
            status += (", regularization_loss matches"
                       if export["regularization_loss_matches"]
                       else ", REGULARIZATION LOSS DIFFERS")
        stdout.write(f"best {dataset.name}: {best[dataset.name]['regularizer']}"
                     f" {best[dataset.name]['setting']} -> {path} "
                     f"(reloaded: {status})\n")
    plots = report.plot(results, kernels, out)
    if not plots:
        notes.append("no plots: matplotlib is not installed")
    summary = {
        "command": " ".join(["tfreg compare", *(argv or [])]),
        "keras": "tf_keras" if _keras.LEGACY else f"Keras {keras.__version__}",
        "tensorflow": tf.__version__,
        "seed": seed, "epochs": epochs, "batch_size": training.BATCH_SIZE,
        "hidden_units": list(training.HIDDEN_UNITS), "learning_rate": training.LEARNING_RATE,
        "zero_threshold": training.ZERO_THRESHOLD,
        "datasets": [{"name": d.name, "task": d.task, "source": d.source,
                      "train_rows": len(d.x_train), "val_rows": len(d.x_val),
                      "features": int(d.x_train.shape[1]),
                      "classes": d.num_classes} for d in datasets],
        "datasets_described": [d.describe() for d in datasets],
        "notes": notes,
        "results": results,
        "best": {name: {key: result[key] for key in (
            "regularizer", "setting", "val_loss", "val_metric")}
            for name, result in best.items()},
        "exports": exports,
        "plots": plots,
        "wall_seconds": time.perf_counter() - wall_start,
    }
    report.write_report(out, summary, report.format_markdown_table(rows), plots)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    stdout.write(f"report: {os.path.join(out, 'report.md')} "
                 f"({summary['wall_seconds']:.0f} s)\n")
    failed = [name for name, export in exports.items()
              if not (export["predictions_match"]
                      and export.get("regularization_loss_matches", True))]
    if failed:
        raise RuntimeError(
            f"the reloaded SavedModel of {failed} does not match the model")
    return summary
