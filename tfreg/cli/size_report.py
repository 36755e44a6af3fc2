"""Rows, verdict, table, plot and report of `tfreg size`."""

import os

import numpy as np

from tfreg import _table

_NAMES = {"unpruned": "unpruned", "group_lasso": "group lasso",
          "sparse_group_lasso": "sparse group lasso",
          "slimming": "slimming (BN L1)", "scratch": "scratch (same arch.)",
          "uniform": "uniform width", "magnitude": "magnitude pruning"}
BASELINES = ("scratch", "uniform", "magnitude")


def row(method, strength, runs, model):
    """A table row: means and standard deviations over the `runs` (one
    dict of params, flops, val, test per seed) and one of its models."""
    out = {"method": method, "strength": strength, "runs": runs,
           "model": model}
    for key in ("params", "flops", "val", "test"):
        values = np.array([run[key] for run in runs], np.float64)
        out[key], out[f"{key}_sd"] = float(values.mean()), float(values.std())
    return out


def plain(entry):
    """`entry` without its model (for JSON)."""
    return {key: value for key, value in entry.items() if key != "model"}


def label(entry):
    name = _NAMES.get(entry["method"], entry["method"])
    if entry["strength"] is not None:
        name += f" {entry['strength']:g}"
    return name


def _candidates(rows):
    """The rows after the first (the unpruned model's) that are not
    baselines."""
    return [entry for entry in rows[1:] if entry["method"] not in BASELINES]


def smallest_within(rows, max_drop, methods=None):
    """The candidate (a row after the first, the unpruned model's; of
    `methods` when given) with the fewest mean parameters whose validation
    accuracy is within `max_drop` points of the unpruned model's beyond the
    seed spread: mean - sd >= unpruned mean - max_drop. None when none is.

    The mean alone would pass a candidate that reaches the bound on some
    seeds only.
    """
    bound = rows[0]["val"] - max_drop / 100
    within = [entry for entry in _candidates(rows)
              if (methods is None or entry["method"] in methods)
              and entry["val"] - entry["val_sd"] >= bound]
    return min(within, key=lambda entry: entry["params"]) if within else None


def choose(rows, max_drop):
    """The verdict: `smallest_within(rows, max_drop)`; when no candidate
    is within, the one of best mean validation accuracy."""
    unpruned = rows[0]
    chosen = smallest_within(rows, max_drop)
    within = chosen is not None
    if not within:
        chosen = max(_candidates(rows), key=lambda entry: entry["val"])
    return {"row": chosen, "label": label(chosen), "within": within,
            "params": chosen["params"], "unpruned_params": unpruned["params"],
            "test": chosen["test"], "test_sd": chosen["test_sd"],
            "unpruned_test": unpruned["test"]}


def compare(chosen, rows):
    """Per baseline: test accuracies and whether the verdict is better or
    worse beyond the seed spread (|difference| > sum of the two sds)."""
    out = {}
    for entry in rows:
        if entry["method"] not in BASELINES:
            continue
        difference = chosen["test"] - entry["test"]
        spread = chosen["test_sd"] + entry["test_sd"]
        outcome = ("better" if difference > spread else
                   "worse" if difference < -spread else "within the spread")
        out[entry["method"]] = {"test": entry["test"],
                                "test_sd": entry["test_sd"],
                                "params": entry["params"],
                                "difference": difference,
                                "outcome": outcome}
    return {"baselines": out}


def _accuracy(entry, key):
    text = f"{100 * entry[key]:.1f}"
    if len(entry["runs"]) > 1:
        text += f" ± {100 * entry[f'{key}_sd']:.1f}"
    return text


def table(rows, chosen, markdown=False):
    """Params, FLOPs, SavedModel latency and accuracies; `*` marks the
    verdict."""
    header = ("model", "params", "FLOPs", "ms b=1", "ms b=64", "val %",
              "test %")
    lines = []
    for entry in rows:
        name = label(entry) + (" *" if entry is chosen else "")
        lines.append((name, f"{entry['params']:,.0f}",
                      f"{entry['flops']:,.0f}",
                      f"{entry.get('latency_ms_batch_1', float('nan')):.3f}",
                      f"{entry.get('latency_ms_batch_64', float('nan')):.3f}",
                      _accuracy(entry, "val"), _accuracy(entry, "test")))
    return _table.render(header, lines, markdown=markdown)


def verdict_line(name, verdict, max_drop):
    """One sentence: the smallest model within `max_drop`, its size and
    test accuracy, and how it fares against each baseline."""
    ratio = verdict["unpruned_params"] / max(verdict["params"], 1)
    head = (f"{name}: smallest within {max_drop:g} points on validation: "
            if verdict["within"] else
            f"{name}: no candidate within {max_drop:g} points on "
            "validation; best: ")
    text = (f"{head}{verdict['label']}, {verdict['params']:,.0f} params "
            f"({ratio:.1f}x fewer), test {100 * verdict['test']:.1f}% vs "
            f"unpruned {100 * verdict['unpruned_test']:.1f}%")
    parts = [f"{_NAMES[key]} {100 * value['test']:.1f}%: {value['outcome']}"
             for key, value in verdict["baselines"].items()]
    return text + "; vs " + "; ".join(parts) + "."


def plot(entries, out):
    """accuracy-vs-params.png: test accuracy against parameters (log x)
    with error bars over seeds, one panel per model; None without
    matplotlib."""
    try:
        import matplotlib  # pylint: disable=g-import-not-at-top
    except ImportError:
        return None
    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
    figure, axes = pyplot.subplots(1, len(entries),
                                   figsize=(5.5 * len(entries), 4),
                                   squeeze=False)
    markers = {"unpruned": "k*", "group_lasso": "o-",
               "sparse_group_lasso": "s-", "slimming": "^-",
               "scratch": "D", "uniform": "v", "magnitude": "P"}
    for axis, entry in zip(axes[0], entries):
        methods = dict.fromkeys(item["method"] for item in entry["rows"])
        for method in methods:
            items = sorted((item for item in entry["rows"]
                            if item["method"] == method),
                           key=lambda item: item["params"])
            axis.errorbar([item["params"] for item in items],
                          [100 * item["test"] for item in items],
                          yerr=[100 * item["test_sd"] for item in items],
                          fmt=markers.get(method, "o"), capsize=3,
                          label=_NAMES.get(method, method))
        axis.set_xscale("log")
        axis.set_xlabel("parameters (log scale)")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(entry["name"])
        axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path = os.path.join(out, "accuracy-vs-params.png")
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def write_markdown(out, summary):
    """report.md: the regime, one table and verdict per model, the plot."""
    lines = ["# tfreg size", "", f"`{summary['command']}` ({summary['keras']}"
             f", {summary['wall_seconds']:.0f} s)", "",
             f"Seeds {summary['seeds']}; epochs: {summary['epochs']}. "
             "The verdict (`*`) is chosen on the validation split and "
             "reported on the held-out test split; latency is the median of "
             "the exported SavedModel's serving signature.", ""]
    for entry in summary["models"]:
        rows = [dict(item, model=None) for item in entry["rows"]]
        chosen = next(item for item in rows
                      if label(item) == entry["verdict"]["label"])
        lines += [f"## {entry['name']}", "", f"{entry['source']}; "
                  f"{entry['data']}", "", table(rows, chosen, markdown=True),
                  "", entry["verdict_line"], ""]
    if summary.get("plot"):
        lines += [f"![accuracy vs parameters]"
                  f"({os.path.basename(summary['plot'])})", ""]
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
