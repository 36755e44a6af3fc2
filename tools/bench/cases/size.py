"""The size case: the network-slimming MLP table of `tfreg size`, at small scale."""

import io
import os
import tempfile

import numpy as np

from tfreg.cli import data as data_lib
from tfreg.cli import size as size_job
from tfreg.cli import size_report
from tools.bench.harness import Case, find, Limit, print_rows, Target
from tools.bench.writer import table

MAX_DROP = 0.5  # points, as in the paper's comparison
REMOVED_GOAL = 0.8
# Liu et al., ICCV 2017, Table 5 (MNIST MLP 784-500-300-10): share of the
# parameters removed and test accuracy (%).
PAPER = {"unpruned": (None, 98.57), "group_lasso": (0.835, 98.47),
         "slimming": (0.844, 98.51)}
PAPER_NAMES = {"group_lasso": "structured sparsity learning",
               "slimming": "network slimming"}


def run_size(settings):
    """`tfreg size --data digits.npz --max-drop 0.5`: the built-in MLP
    (64-500-300-10) on digits, default preset and 3 seeds (tiny: one epoch
    per phase, 1 seed); a quick run skips it."""
    if settings.scale == "quick":
        # The published table needs the default preset (minutes): full
        # runs only.
        return []
    preset = settings.pick(full="default", tiny="tiny")
    seeds = settings.pick(full=3, tiny=1)
    with tempfile.TemporaryDirectory(prefix="bench-size-") as directory:
        x, y = data_lib.load_builtin("digits")
        path = os.path.join(directory, "digits.npz")
        np.savez(path, x=x, y=y)
        summary = size_job.run(
            data=path, preset=preset, seeds=seeds, max_drop=MAX_DROP,
            out=os.path.join(directory, "report"), stdout=io.StringIO(),
            argv=["--data", "digits.npz", "--max-drop", f"{MAX_DROP:g}"])
    (entry,) = summary["models"]
    rows = [{"kind": "row", "label": size_report.label(row),
             "verdict": size_report.label(row) == entry["verdict"]["label"],
             **{key: row[key] for key in (
                 "method", "strength", "params", "val", "val_sd", "test",
                 "test_sd")}} for row in entry["rows"]]
    rows.append({"kind": "regime", "preset": preset, "seeds": seeds,
                 "epochs": summary["epochs"], "data": entry["data"],
                 "seconds": summary["wall_seconds"]})
    print_rows(find(rows, kind="row"), ("label", "params", "val", "test"))
    return rows


def _chosen(rows, method):
    """The smallest row of `method` within MAX_DROP points of the unpruned
    validation accuracy beyond the seed spread (the verdict's rule), or
    None."""
    return size_report.smallest_within(rows, MAX_DROP, methods=(method,))


def _percent(row, key):
    text = f"{100 * row[key]:.2f}"
    return text + (f" ± {100 * row[key + '_sd']:.2f}" if row[key + "_sd"]
                   else "")


def table_size(rows):
    lines = find(rows, kind="row")
    if not lines:
        return ("`tfreg size` on the built-in MLP and digits, default preset, "
                "3 seeds: minutes of training, in the full run only.")
    (regime,) = find(rows, kind="regime")
    (unpruned,) = find(lines, method="unpruned")
    chosen = {method: _chosen(lines, method) for method in PAPER_NAMES}

    def paper(row, index):
        method = row["method"]
        if method not in PAPER or (method != "unpruned"
                                   and row is not chosen[method]):
            return ""
        value = PAPER[method][index]
        if value is None:
            return "–"
        return f"{100 * value:.1f}%" if index == 0 else f"{value:.2f}"

    def name(row):
        text = row["label"]
        if row is chosen.get(row["method"]):
            text += f" ({PAPER_NAMES[row['method']]})"
        return text + (", the verdict" if row["verdict"] else "")

    body = table(lines, (
        ("model", name),
        ("paper: params removed", lambda row: paper(row, 0)),
        ("paper: test %", lambda row: paper(row, 1)),
        ("params", lambda row: f"{row['params']:,.0f}"),
        ("removed", lambda row: "–" if row is unpruned else
         f"{100 * (1 - row['params'] / unpruned['params']):.1f}%"),
        ("val %", lambda row: _percent(row, "val")),
        ("test %", lambda row: _percent(row, "test"))))
    epochs = regime["epochs"]
    return (f"`tfreg size --data digits.npz --max-drop {MAX_DROP:g}` "
            f"({regime['preset']} preset, seeds: {regime['seeds']}, mean ± "
            f"sd; epochs: start {epochs['start']}, penalized "
            f"{epochs['penalized']}, fine-tune {epochs['fine_tune']}; "
            f"{regime['data']}). Liu et al. (ICCV 2017) prune an MNIST MLP "
            "784-500-300-10; ours is 64-500-300-10 on digits. Per penalty, "
            f"the strength named is the smallest model within {MAX_DROP:g} "
            "points of the unpruned validation accuracy beyond the seed "
            "spread (mean - sd); the baselines sit "
            "at the parameter count of the verdict (the smallest of all "
            "candidates within it).\n\n" + body)


SIZE_GOALS = {
    "removed": (f"digits MLP, {MAX_DROP:g} points on validation: >= "
                f"{100 * REMOVED_GOAL:.0f}% of the parameters removed "
                "(share removed)"),
    "drop": (f"digits MLP, the same model: test accuracy within {MAX_DROP:g} "
             "points of the unpruned model's (points below)"),
}


def targets_size(rows, settings):
    del settings
    lines = find(rows, kind="row")
    if not lines:
        return []
    (unpruned,) = find(lines, method="unpruned")
    out = []
    for method, title in (("group_lasso", "group lasso"),
                          ("slimming", "slimming")):
        row = _chosen(lines, method)
        removed = 0.0 if row is None else 1 - row["params"] / unpruned[
            "params"]
        drop = (float("nan") if row is None
                else 100 * (unpruned["test"] - row["test"]))
        out.append(Target(SIZE_GOALS["removed"], title, "", removed,
                          removed >= REMOVED_GOAL))
        out.append(Target(SIZE_GOALS["drop"], title, "", drop,
                          row is not None and drop <= MAX_DROP))
    return out


SIZE_LIMITS = {goal: (Limit("Strength grid", (
    "The proximal step thresholds in Adam's per-weight step sizes, so the "
    "parameters removed jump between neighbouring strengths (a cliff: "
    "past it a layer empties on some seeds); the grid of the default "
    "preset is coarse (docs/size.md).")),) for goal in SIZE_GOALS.values()}


SIZE_CASE = Case(
    name="size",
    title="How small: the network-slimming MLP table",
    about="`tfreg size` on the built-in MLP 64-500-300-10 and digits: group "
          "lasso and network slimming through the proximal optimizer, "
          "shrunk and fine-tuned, beside the scratch, uniform-width and "
          "magnitude-pruning baselines and the numbers of Liu et al. "
          "(ICCV 2017).",
    run=run_size,
    table=table_size,
    targets=targets_size,
    limits=SIZE_LIMITS)
