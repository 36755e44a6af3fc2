"""`tfreg size`: how small can a trained model get, at what accuracy.

From a trained classifier (the user's, weights kept, or the built-in MLP and
residual CNN trained on digits once per seed), each candidate trains on with
a structured penalty through `tfreg.optimizers.Regularized(mode="proximal")`
at a sweep of strengths, is shrunk by `tfreg.shrink` (exactly-zero channel
groups removed, same function) and fine-tuned at the preset's
FINE_TUNE_RATE times the learning rate, once per seed. Candidates:

    group_lasso          factor * sum_g sqrt(p_g) ||W_g||_2 over the coupled
                         channel groups (`tfreg.channel_groups`)
    sparse_group_lasso   per kernel, factor * sum_u sqrt(p) ||W_u||_2 over its
                         units' columns plus SPARSE_L1_SHARE * factor * sum |w|
    slimming             factor * sum |gamma| on BatchNormalization's scales
                         (a channel whose gamma is 0 is a constant, folded)

Baselines at the parameter count of the verdict: the unpruned model (the
built-in ones: the mean over the seeds' models); the verdict's shrunk
architecture trained from new weights for the epochs the candidate trained
after the start (`scratch`); every prunable layer narrowed by one factor,
trained the same way (`uniform`); and each seed's start model's coupled
groups of smallest RMS (relative to their layer's mean) removed down to
that count, then the candidate's fine-tune (`magnitude`). The verdict, the
smallest candidate within `max_drop` points of the unpruned validation
accuracy beyond the seed spread (mean - sd), is chosen on the validation
split and reported on the held-out test split.
"""

import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tfreg.cli import UsageError
from tfreg.cli import data as data_lib
from tfreg.cli import model_file
from tfreg.cli import size_models as models
from tfreg.cli import size_report as report

keras = _keras.keras

SPARSE_L1_SHARE = 1.0
# Strengths per preset and candidate (the same grid on every path: the
# proximal step thresholds with Adam's own per-weight step sizes). The
# `tiny` preset is a smoke run (the bench's --tiny): its numbers mean nothing.
STRENGTHS = {
    "tiny": {"group_lasso": (3e-4,), "sparse_group_lasso": (1e-3,),
             "slimming": (1e-2,)},
    "quick": {"group_lasso": (1.5e-4, 5e-4), "sparse_group_lasso": (1e-3,),
              "slimming": (1e-2, 3e-2)},
    "default": {"group_lasso": (1e-4, 1.5e-4, 2e-4, 5e-4),
                "sparse_group_lasso": (1e-3,),
                "slimming": (5e-3, 1e-2, 3e-2, 5e-2)},
}
# Epochs: training the built-in start models, the penalized phase, and the
# fine-tune of the shrunk model.
EPOCHS = {"tiny": (1, 1, 1), "quick": (20, 8, 5), "default": (60, 30, 20)}
# The fine-tunes (of a shrunk model, and of the magnitude baseline) run at
# this share of the start optimizer's learning rate: they refine weights
# that are already trained, which the full rate would partly undo. The
# quick preset's 5 epochs are too few to recover at a lower rate (its
# sparse group lasso fell from 95% to 40% validation accuracy at 0.3).
FINE_TUNE_RATE = {"tiny": 1.0, "quick": 1.0, "default": 0.3}
LATENCY_BATCHES = (1, 64)
LATENCY_REPEATS = {"tiny": 3, "quick": 15, "default": 50}


def _data(data, target, seed, image):
    """The classification dataset, features shaped (8, 8, 1) for the
    built-in CNN when `image`."""
    if data in (None, "digits"):
        x, y = data_lib.load_builtin("digits")
        if image:
            x = x.reshape(-1, 8, 8, 1)
        dataset = data_lib.prepare("digits", x, y, "classification", seed,
                                   source="scikit-learn load_digits()")
    else:
        (dataset,) = data_lib.load_datasets(data, target, "auto", seed)
        if dataset.task != "classification":
            raise UsageError(
                f"tfreg size needs a classification target; {data} has a "
                "regression target")
    return dataset


def _starts(model, data, target, seeds, base_epochs):
    """[(Start, dataset)]: the user's model, or the built-in ones trained
    with Adam for `base_epochs`, once per seed (the CNN on digits' 8x8
    images only). The data split is the first seed's."""
    if model is not None:
        dataset = _data(data, target, seeds[0], image=False)
        return [(models.loaded(model, dataset, seeds), dataset)]
    builds = [(models.mlp, False)]
    if data in (None, "digits"):
        builds.append((models.residual_cnn, True))
    starts = []
    for build, image in builds:
        dataset = _data(data, target, seeds[0], image)
        networks = {seed: build(dataset.x_train.shape[1:],
                                dataset.num_classes, seed) for seed in seeds}
        start = models.Start(networks[seeds[0]].name, networks, models.adam,
                             True, f"built-in, trained {base_epochs} epochs "
                             "(Adam) per seed")
        for seed, network in networks.items():
            models.fit(network, start, dataset, base_epochs, seed)
        starts.append((start, dataset))
    return starts


def _has_batch_norm(model):
    return any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in model.layers)


def _penalize(method, model, strength):
    """fit's keyword arguments that make `method` at `strength`."""
    if method == "slimming":
        return {"regularizer": tfreg.L1(strength), "include": "gamma$"}
    if method == "sparse_group_lasso":
        # Per kernel: Regularized applies no regularizer= to the weights a
        # coupled penalty already covers, so the L1 cannot join one.
        return {"regularizer": tfreg.SparseGroupLasso(
            l1=SPARSE_L1_SHARE * strength, factor=strength)}
    groups = tfreg.channel_groups(model)
    return {"penalties": [tfreg.apply_groups(
        model, groups, tfreg.GroupLasso(strength), via="optimizer")]}


def _evaluate(model, dataset):
    cost = tfreg.model_cost(model)
    return {"params": cost["params"], "flops": cost["flops"],
            "val": models.accuracy(model, dataset.x_val, dataset.y_val),
            "test": models.accuracy(model, dataset.x_test, dataset.y_test)}


def _candidate(start, dataset, method, strength, seeds, epochs,
               fine_tune_rate):
    """Runs of `method` at `strength` (penalized, shrunk, fine-tuned at
    `fine_tune_rate` times the learning rate), one per seed, and the last
    seed's model."""
    runs, small = [], None
    for seed in seeds:
        model = models.copy(start.models[seed])
        models.fit(model, start, dataset, epochs[0], seed,
                   **_penalize(method, model, strength))
        small = _shrink(model)
        models.fit(small, start, dataset, epochs[1], seed,
                   rate_scale=fine_tune_rate)
        runs.append(_evaluate(small, dataset))
    return runs, small


def _shrink(model, groups=None):
    """`tfreg.shrink`, quiet about zero groups it keeps: a layer keeps one
    unit even when the penalty zeroed all of them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "shrink keeps the zero group")
        return tfreg.shrink(model, groups=groups)


def _zeroed(model, removed):
    """A copy of `model` whose groups at the indices `removed` (of
    `channel_groups`) have zero kernel slices, shrunk."""
    model = models.copy(model)
    groups = tfreg.channel_groups(model)
    for index in removed:
        for piece in groups[index].slices:
            if piece.role != "kernel":
                continue
            value = piece.variable.numpy()
            where = [slice(None)] * value.ndim
            where[piece.axis] = list(piece.indices)
            value[tuple(where)] = 0
            piece.variable.assign(value)
    return _shrink(model, groups)


def _down_to(order, model, params):
    """The shrunk model without the first k groups of `order`, for the
    smallest k whose parameter count is at most `params` (bisection)."""
    low, high = 0, len(order)
    best = _zeroed(model, order)
    while low < high:
        middle = (low + high) // 2
        small = _zeroed(model, order[:middle])
        if small.count_params() <= params:
            high, best = middle, small
        else:
            low = middle + 1
    return best


def _uniform_order(groups):
    """Group indices in the order uniform narrowing removes them: the i-th
    of a layer's n groups (its last first) at key (n - i) / n, so that any
    prefix removes about the same share of every layer's groups."""
    by_layer = {}
    for index, group in enumerate(groups):
        by_layer.setdefault(group.units[0][0], []).append(index)
    keyed = [((len(indices) - position) / len(indices), index)
             for indices in by_layer.values()
             for position, index in enumerate(indices)]
    return [index for _, index in sorted(keyed)]


def _magnitude_order(groups):
    """Group indices by the RMS of their trainable entries divided by the
    mean of that RMS over their layer's groups, smallest first (the L2
    importance of Li et al. 2017 with Torch-Pruning's mean normalizer).
    Unnormalized, a layer whose weights are smaller overall (a wider fan-in)
    would lose all its groups before another lost any."""
    def rms(group):
        values = [np.take(piece.variable.numpy(), piece.indices,
                          axis=piece.axis).ravel()
                  for piece in group.trainable_slices()]
        values = np.concatenate(values)
        return float(np.sqrt(np.mean(values ** 2)))
    by_layer = {}
    for index, group in enumerate(groups):
        by_layer.setdefault(group.units[0][0], []).append(index)
    importance = {}
    for indices in by_layer.values():
        values = np.array([rms(groups[index]) for index in indices])
        importance.update(zip(indices, values / max(values.mean(), 1e-12)))
    return sorted(range(len(groups)), key=importance.__getitem__)


def _baselines(start, dataset, target, architecture, seeds, epochs,
               fine_tune_rate):
    """{name: (runs, model)} of the scratch, uniform and magnitude
    baselines at about `target` parameters (magnitude: pruned from each
    seed's start model)."""
    groups = tfreg.channel_groups(start.model)
    uniform = _down_to(_uniform_order(list(groups)), start.model, target)
    out = {}
    for name, shape in (("scratch", architecture), ("uniform", uniform)):
        runs = []
        for seed in seeds:
            model = models.fresh(shape, 1000 + seed)
            models.fit(model, start, dataset, sum(epochs), seed)
            runs.append(_evaluate(model, dataset))
        out[name] = (runs, model)
    runs, pruned = [], {}
    for seed in seeds:
        origin = start.models[seed]
        if id(origin) not in pruned:
            pruned[id(origin)] = _down_to(_magnitude_order(list(
                tfreg.channel_groups(origin))), origin, target)
        model = models.copy(pruned[id(origin)])
        models.fit(model, start, dataset, epochs[1], seed,
                   rate_scale=fine_tune_rate)
        runs.append(_evaluate(model, dataset))
    out["magnitude"] = (runs, model)
    return out


def _latency(model, directory, repeats):
    """Median ms of the exported SavedModel's serving signature per batch
    size in LATENCY_BATCHES."""
    tfreg.export_saved_model(model, directory)
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    (argument,) = serve.structured_input_signature[1]
    shape = [int(d) for d in model.inputs[0].shape[1:]]
    out = {}
    for batch in LATENCY_BATCHES:
        x = tf.constant(np.zeros([batch] + shape, np.float32))
        for _ in range(3):
            serve(**{argument: x})
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            for value in serve(**{argument: x}).values():
                value.numpy()
            times.append(1000 * (time.perf_counter() - begin))
        out[batch] = float(np.median(times))
    return out


def _save_verdict(model, dataset, out, name):
    """Writes `model` as .keras and as an exported SavedModel, reloads both
    and compares their test predictions with the model's."""
    path = os.path.join(out, f"{name}-smallest.keras")
    model.save(path)
    exported = os.path.join(out, f"{name}-smallest-savedmodel")
    tfreg.export_saved_model(model, exported)
    expected = np.asarray(model(dataset.x_test, training=False))
    reloaded = np.asarray(model_file.load(path)(dataset.x_test,
                                                training=False))
    serve = tf.saved_model.load(exported).signatures["serving_default"]
    (argument,) = serve.structured_input_signature[1]
    (served,) = serve(**{argument: tf.constant(dataset.x_test)}).values()
    match = {"keras": bool(np.allclose(reloaded, expected, atol=1e-5)),
             "saved_model": bool(np.allclose(served, expected, atol=1e-5))}
    return {"keras_file": path, "saved_model": exported,
            "reloaded_match": match}


def _check_out(out):
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is an existing file, not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out}: {error}") from None


def _check_max_drop(max_drop):
    if isinstance(max_drop, bool) or not isinstance(
            max_drop, (int, float)) or not 0 <= max_drop < 100:
        raise UsageError(f"--max-drop must be a number of points in "
                         f"[0, 100); got {max_drop!r}")


def run(model=None, data=None, target=None, preset="default", seeds=3,
        max_drop=1.0, seed=0, out="size-report", stdout=None, stderr=None,
        argv=None):
    """Runs the size job; returns the summary written to results.json.

    Raises `UsageError` for bad input (files, shapes, options).
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    wall = time.perf_counter()
    _check_max_drop(max_drop)
    if preset not in STRENGTHS:
        raise UsageError(f"unknown preset {preset!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"--seeds must be an int >= 1; got {seeds!r}")
    _check_out(out)
    base_epochs, *epochs = EPOCHS[preset]
    run_seeds = list(range(seed, seed + seeds))
    summary = {"command": " ".join(["tfreg size", *(argv or [])]),
               "keras": ("tf_keras" if _keras.LEGACY
                         else f"Keras {keras.__version__}"),
               "preset": preset, "seeds": run_seeds, "max_drop": max_drop,
               "epochs": {"start": base_epochs, "penalized": epochs[0],
                          "fine_tune": epochs[1]},
               "models": []}
    starts = _starts(model, data, target, run_seeds, base_epochs)
    latency_dir = tempfile.mkdtemp(prefix="tfreg-size-")
    for start, dataset in starts:
        stderr.write(f"model {start.name}: {start.source}; data "
                     f"{dataset.name}: {len(dataset.x_train)} train / "
                     f"{len(dataset.x_val)} validation / "
                     f"{len(dataset.x_test)} test rows\n")
        unpruned = [_evaluate(network, dataset)
                    for network in start.distinct()]
        rows = [report.row("unpruned", None, unpruned, start.model)]
        methods = [method for method in STRENGTHS[preset]
                   if method != "slimming" or _has_batch_norm(start.model)]
        for method in methods:
            for strength in STRENGTHS[preset][method]:
                began = time.perf_counter()
                runs, small = _candidate(start, dataset, method, strength,
                                         run_seeds, epochs,
                                         FINE_TUNE_RATE[preset])
                rows.append(report.row(method, strength, runs, small))
                stderr.write(f"  {method} {strength:g}: "
                             f"{rows[-1]['params']:,.0f} params, val "
                             f"{100 * rows[-1]['val']:.1f}% "
                             f"({time.perf_counter() - began:.0f} s)\n")
        verdict = report.choose(rows, max_drop)
        chosen = verdict["row"]
        baselines = _baselines(start, dataset, chosen["params"],
                               chosen["model"], run_seeds, epochs,
                               FINE_TUNE_RATE[preset])
        for name, (runs, small) in baselines.items():
            rows.append(report.row(name, None, runs, small))
        for index, row in enumerate(rows):
            row.update(("latency_ms_batch_%d" % batch, value)
                       for batch, value in _latency(
                           row["model"],
                           os.path.join(latency_dir, f"{start.name}-{index}"),
                           LATENCY_REPEATS[preset]).items())
        verdict.update(report.compare(chosen, rows))
        saved = _save_verdict(chosen["model"], dataset, out, start.name)
        text = report.table(rows, chosen)
        line = report.verdict_line(start.name, verdict, max_drop)
        stdout.write(f"\n{start.name} on {dataset.name}\n{text}\n{line}\n")
        stdout.write(f"saved: {saved['keras_file']}, "
                     f"{saved['saved_model']} (reloaded: "
                     + ", ".join(f"{key} {'matches' if ok else 'DIFFERS'}"
                                 for key, ok in saved[
                                     "reloaded_match"].items()) + ")\n")
        summary["models"].append({
            "name": start.name, "source": start.source,
            "data": dataset.describe(), "test_rows": len(dataset.x_test),
            "first_evaluation": unpruned[0],
            "rows": [report.plain(row) for row in rows],
            "verdict": {key: value for key, value in verdict.items()
                        if key != "row"},
            "verdict_line": line, "saved": saved})
    summary["plot"] = report.plot(summary["models"], out)
    summary["wall_seconds"] = time.perf_counter() - wall
    report.write_markdown(out, summary)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    stdout.write(f"report: {os.path.join(out, 'report.md')} "
                 f"({summary['wall_seconds']:.0f} s)\n")
    failed = [entry["name"] for entry in summary["models"]
              if not all(entry["saved"]["reloaded_match"].values())]
    if failed:
        raise RuntimeError(f"the reloaded files of {failed} do not match")
    return summary
