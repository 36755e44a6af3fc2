"""`tfreg compare`: which regularizer, how strong, and is it worth it.

Trains a model (the default MLP, or the user's saved functional model) once
per candidate (regularizer and strength) and seed with `jit_compile=True`,
and reports per candidate the mean and spread over seeds of the validation
loss and metric, the share of near-zero weights, the penalty and the step
time, with a verdict per dataset. Writes a Markdown report, plots, a JSON of
every number and the best model as a SavedModel (reloaded and checked) to
the output directory.
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


def _check_int(option, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or \
            value < minimum:
        raise UsageError(f"{option} must be an int >= {minimum}; got "
                         f"{value!r}")


def run(data=None, target=None, task="auto", model=None, regularizers=None,
        strengths="default", seeds=3, epochs=40, train_rows=None, seed=0,
        out="compare-report", stdout=None, stderr=None, argv=None):
    """Runs the comparison; returns the summary dict written to results.json.

    `seeds` runs per candidate use seeds `seed`, `seed + 1`, ...; the
    train/validation split uses `seed`. Raises `UsageError` for bad input
    (files, columns, names, options).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    wall_start = time.perf_counter()
    _check_int("--epochs", epochs, 1)
    _check_int("--seeds", seeds, 1)
    _check_int("--seed", seed, 0)
    families = sweep.parse_regularizers(regularizers)
    datasets = data_lib.load_datasets(data, target, task, seed, train_rows)
    architectures = [training.saved_model(model, dataset) if model
                     else training.mlp(dataset) for dataset in datasets]
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out}: {error}") from None

    # Seeds make runs repeatable: XLA:CPU executables are deterministic.
    # `tf.config.experimental.enable_op_determinism()` is deliberately not
    # called: Keras 3 then silently trains with jit_compile=False.
    run_seeds = list(range(seed, seed + seeds))
    plan, notes = [], []
    for dataset, architecture in zip(datasets, architectures):
        runs, skipped = sweep.candidates(families, len(dataset.x_train),
                                         strengths)
        plan += [(dataset, architecture, candidate) for candidate in runs]
        notes += [note for note in skipped if note not in notes]
    for note in notes:
        stderr.write(f"note: {note}\n")
    for dataset, architecture in zip(datasets, architectures):
        stderr.write(f"data: {dataset.describe()}; model: "
                     f"{architecture.description}\n")

    tracker = training.Tracker(
        sum(training.steps_per_epoch(dataset) * epochs * seeds
            for dataset, _, _ in plan), len(plan) * seeds, stream=stderr)
    results, kernels, trained, shared = [], {}, {}, {}
    for dataset, architecture, candidate in plan:
        # The strengths of a shared family train on one compiled model.
        family = (dataset.name, candidate.family)
        compiled = shared.get(family)
        if compiled is None:
            compiled = training.compile_candidate(dataset, candidate,
                                                  architecture, run_seeds[0])
            if candidate.strength is not None:
                shared[family] = compiled
        results += training.train_candidate(
            dataset, candidate, architecture, run_seeds, epochs, tracker,
            compiled)
        key = (dataset.name, candidate.family, candidate.setting)
        kernels[key] = training.kernels(compiled.model)
        # What the export of this candidate needs: its model, its last
        # seed's weights and its strength.
        trained[key] = (compiled.model, compiled.model.get_weights(),
                        candidate)

    rows = report.aggregate(results)
    verdicts = report.verdicts(rows)
    best = {name: verdict["best_row"] for name, verdict in verdicts.items()}
    verdict_lines = report.verdict_lines(verdicts)
    for (dataset, text), line in zip(report.tables(rows, best).items(),
                                     verdict_lines):
        stdout.write(f"\n{dataset}\n{text}\n{line}\n\n")
    exports = {}
    for dataset in datasets:
        row = best[dataset.name]
        path = os.path.join(os.path.abspath(out), f"model-{dataset.name}")
        model, weights, candidate = trained[(dataset.name, row["regularizer"],
                                             row["setting"])]
        model.set_weights(weights)
        if candidate.strength is not None:
            candidate.strength.assign(candidate.value)
        exports[dataset.name] = export = training.export_and_check(
            model, dataset, path)
        status = ("predictions match" if export["predictions_match"]
                  else "PREDICTIONS DIFFER")
        status += (", regularization_loss matches"
                   if export["regularization_loss_matches"]
                   else ", REGULARIZATION LOSS DIFFERS")
        stdout.write(f"best {dataset.name}: {report.label(row)} -> {path} "
                     f"(reloaded: {status})\n")
    plots = report.plot(results, rows, kernels, out)
    if not plots:
        notes.append("no plots: matplotlib is not installed")
    summary = {
        "command": " ".join(["tfreg compare", *(argv or [])]),
        "keras": "tf_keras" if _keras.LEGACY else f"Keras {keras.__version__}",
        "tensorflow": tf.__version__,
        "regime": {
            "model": "; ".join(dict.fromkeys(
                architecture.description for architecture in architectures)),
            "seeds": run_seeds, "epochs": epochs, "strengths": strengths,
            "batch_size": training.BATCH_SIZE,
            "learning_rate": training.LEARNING_RATE,
            "zero_threshold": training.ZERO_THRESHOLD},
        "datasets": [{"name": d.name, "task": d.task, "source": d.source,
                      "train_rows": len(d.x_train),
                      "total_train_rows": d.total_train_rows,
                      "val_rows": len(d.x_val),
                      "test_rows": len(d.x_test),
                      "feature_shape": list(d.x_train.shape[1:]),
                      "classes": d.num_classes} for d in datasets],
        "datasets_described": [d.describe() for d in datasets],
        "notes": notes,
        "candidates": rows,
        "results": results,
        "verdicts": {name: {key: value for key, value in verdict.items()
                            if not key.endswith("_row")}
                     for name, verdict in verdicts.items()},
        "verdict_lines": verdict_lines,
        "exports": exports,
        "plots": plots,
    }
    summary["wall_seconds"] = time.perf_counter() - wall_start
    report.write_markdown(out, summary, rows, best, plots)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    stdout.write(f"report: {os.path.join(out, 'report.md')} "
                 f"({summary['wall_seconds']:.0f} s)\n")
    failed = [name for name, export in exports.items()
              if not (export["predictions_match"]
                      and export["regularization_loss_matches"])]
    if failed:
        raise RuntimeError(
            f"the reloaded SavedModel of {failed} does not match the model")
    return summary
