"""The comparison's report: per-candidate statistics, verdicts, tables, plots."""

import dataclasses
import math
import os

import numpy as np

from tfreg import _table
from tfreg.cli import sweep
from tfreg.cli import training

# The per-seed numbers summarized as mean and sample standard deviation.
STATISTICS = ("val_loss", "val_metric", "test_loss", "test_metric",
              "near_zero", "zero", "zero_units",
              "parameters_after_shrink", "penalty", "ms_per_step")


def aggregate(results):
    """One dict per (dataset, regularizer, setting), in run order: the
    mean and standard deviation over seeds of each of `STATISTICS`."""
    groups = {}
    for result in results:
        key = (result["dataset"], result["regularizer"], result["setting"])
        groups.setdefault(key, []).append(result)
    rows = []
    for (dataset, regularizer, setting), runs in groups.items():
        row = {"dataset": dataset, "regularizer": regularizer,
               "setting": setting, "metric": runs[0]["metric"],
               "config": runs[0]["config"], "seeds": len(runs),
               "units": runs[0]["units"], "parameters": runs[0]["parameters"]}
        for name in STATISTICS:
            values = np.array([run[name] for run in runs], np.float64)
            row[name] = float(values.mean())
            row[name + "_sd"] = (float(values.std(ddof=1)) if len(values) > 1
                                 else 0.0)
        rows.append(row)
    return rows


def label(row):
    return sweep.label(row["regularizer"], row["setting"])


def verdicts(rows):
    """Per dataset: the candidate with the lowest mean validation loss, its
    gain over `none` and whether that gain exceeds the seed spread (the sum
    of the two standard deviations)."""
    out = {}
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        mine = [row for row in rows if row["dataset"] == dataset]
        best = min(mine, key=lambda row: row["val_loss"])
        none = next(row for row in mine if row["regularizer"] == "none")
        beyond = [row for row in mine if row is not none and
                  none["val_loss"] - row["val_loss"] >
                  none["val_loss_sd"] + row["val_loss_sd"]]
        gain = none["val_loss"] - best["val_loss"]
        spread = none["val_loss_sd"] + best["val_loss_sd"]
        out[dataset] = {
            "best": label(best), "best_row": best, "none_row": none,
            "gain": gain, "spread": spread,
            "exceeds_spread": best is not none and gain > spread,
            "beyond_spread": [label(row) for row in beyond],
        }
    return out


def _percent(value):
    return f"{value:.1%}"


def _metric(row, value):
    if row["metric"] == "accuracy":
        return _percent(value)
    return f"{value:.4g}"


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of the results table: its header, its cell from a row of
    `aggregate`, and its definition in the report."""
    header: str
    cell: object
    definition: str = ""


def _mean_sd(name, fmt):
    return lambda row: f"{fmt(row, row[name])} ± {fmt(row, row[name + '_sd'])}"


COLUMNS = (
    Column("regularizer", label),
    Column("val loss", _mean_sd("val_loss", lambda row, v: f"{v:.4f}"),
           "validation data loss after the last epoch, without the penalty "
           "(cross-entropy; for regression the MSE of the standardized "
           "target), mean ± standard deviation over the seeds"),
    Column("val metric", _mean_sd("val_metric", _metric),
           "validation accuracy, or mean absolute error in the target's "
           "units (the header names it), mean ± sd"),
    Column("near-zero", lambda row: _percent(row["near_zero"]),
           f"share of kernel weights (every weight of rank >= 2) with "
           f"|w| < {training.ZERO_THRESHOLD:g}"),
    Column("zeros", lambda row: _percent(row["zero"]),
           "share of kernel weights exactly 0"),
    Column("zero units", lambda row: f"{row['zero_units']:.4g}/"
                                     f"{row['units']}",
           "units (output channels of a kernel) whose incoming weights are "
           "all exactly 0, of all units"),
    Column("params", lambda row: f"{row['parameters_after_shrink']:,.0f}",
           "parameters of `tfreg.shrink(model)`, the model without its "
           "exactly-zero channel groups (same function); the full model has "
           "the count of the `none` row"),
    Column("penalty", lambda row: f"{row['penalty']:.4g}",
           "the weight penalty after the last epoch minus its value at all-"
           "zero weights (for priors, -log p(w) / num_examples without the "
           "normalizing constant), so it is >= 0 for every regularizer "
           "smallest at 0"),
    Column("ms/step", lambda row: f"{row['ms_per_step']:.2f}",
           "mean wall time of one training step of one model (batch "
           f"{training.BATCH_SIZE}) over the steps after each run's first "
           "(which compiles in a candidate's first seed); the same measure "
           "for every row"),
)


def table(rows, best, markdown=False):
    """One dataset's rows as a text (or Markdown) table; `*` marks the
    best candidate."""
    cells = []
    for row in rows:
        line = [column.cell(row) for column in COLUMNS]
        if row is best:
            line[0] += " *"
        cells.append(line)
    header = [column.header for column in COLUMNS]
    header[2] = rows[0]["metric"]
    return _table.render(header, cells, markdown=markdown)


def tables(rows, best, markdown=False):
    """{dataset: its table}."""
    return {dataset: table([row for row in rows if row["dataset"] == dataset],
                           best[dataset], markdown)
            for dataset in dict.fromkeys(row["dataset"] for row in rows)}


def verdict_lines(verdicts_by_dataset):
    lines = []
    for dataset, verdict in verdicts_by_dataset.items():
        best, none = verdict["best_row"], verdict["none_row"]
        if best is none:
            lines.append(
                f"{dataset}: no regularizer beats none on validation loss "
                f"(none on the held-out test split: loss "
                f"{none['test_loss']:.4f}, {none['metric']} "
                f"{_metric(none, none['test_metric'])}).")
            continue
        beyond = ("exceeds" if verdict["exceeds_spread"]
                  else "does NOT exceed")
        metric = best["metric"]
        lines.append(
            f"{dataset}: best {verdict['best']}: val loss "
            f"{best['val_loss']:.4f} vs none {none['val_loss']:.4f}, gain "
            f"{verdict['gain']:.4f}, which {beyond} the seed spread "
            f"({verdict['spread']:.4f}); {metric} "
            f"{_metric(best, best['val_metric'])} vs "
            f"{_metric(none, none['val_metric'])}. "
            f"{len(verdict['beyond_spread'])} candidate(s) beat none beyond "
            "the spread. On the held-out test split (not used to pick): "
            f"loss {best['test_loss']:.4f} vs none {none['test_loss']:.4f}, "
            f"{metric} {_metric(best, best['test_metric'])} vs "
            f"{_metric(none, none['test_metric'])}.")
    return lines


def _best_per_family(rows, dataset):
    best = {}
    for row in rows:
        if row["dataset"] != dataset:
            continue
        current = best.get(row["regularizer"])
        if current is None or row["val_loss"] < current["val_loss"]:
            best[row["regularizer"]] = row
    return best


def _mean_curves(results, row):
    runs = [r for r in results if (r["dataset"], r["regularizer"],
                                   r["setting"]) == (row["dataset"],
                                                     row["regularizer"],
                                                     row["setting"])]
    epochs = runs[0]["curves"]["epoch"]
    return epochs, {name: np.mean([r["curves"][name] for r in runs], axis=0)
                    for name in ("val_loss", "val_metric")}


def plot(results, rows, kernels, out):
    """Validation curves, weight histograms and metric against sparsity;
    returns the PNG file names."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    from matplotlib import pyplot

    files = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        best = _best_per_family(rows, dataset)
        metric = next(iter(best.values()))["metric"]
        figure, axes = pyplot.subplots(1, 2, figsize=(11, 4))
        for row in best.values():
            epochs, curves = _mean_curves(results, row)
            axes[0].plot(epochs, curves["val_loss"], label=label(row))
            axes[1].plot(epochs, curves["val_metric"], label=label(row))
        axes[0].set(title=f"{dataset}: validation loss (without penalty)",
                    xlabel="epoch", ylabel="loss")
        axes[1].set(title=f"{dataset}: validation {metric}", xlabel="epoch",
                    ylabel=metric)
        axes[0].legend(fontsize=7)
        figure.tight_layout()
        files.append(_save(figure, pyplot, out, f"curves-{dataset}.png"))

        columns = min(4, len(best))
        lines = math.ceil(len(best) / columns)
        figure, axes = pyplot.subplots(lines, columns, squeeze=False,
                                       figsize=(3.2 * columns, 2.6 * lines))
        for axis, row in zip(axes.flat, best.values()):
            axis.hist(kernels[(dataset, row["regularizer"], row["setting"])],
                      bins=60, log=True)
            axis.set_title(label(row), fontsize=8)
        for axis in list(axes.flat)[len(best):]:
            axis.axis("off")
        figure.suptitle(f"{dataset}: kernel weights (best strength each, "
                        "last seed)")
        figure.tight_layout()
        files.append(_save(figure, pyplot, out, f"weights-{dataset}.png"))

        figure, axis = pyplot.subplots(figsize=(6.5, 4.5))
        for family in dict.fromkeys(row["regularizer"] for row in rows):
            mine = [row for row in rows if row["dataset"] == dataset and
                    row["regularizer"] == family]
            axis.errorbar([100 * row["near_zero"] for row in mine],
                          [row["val_metric"] for row in mine],
                          xerr=[100 * row["near_zero_sd"] for row in mine],
                          yerr=[row["val_metric_sd"] for row in mine],
                          fmt="o-", capsize=3, label=family)
        axis.set(title=f"{dataset}: {metric} against sparsity "
                       "(mean ± sd over seeds)",
                 xlabel=f"near-zero kernel weights (%, |w| < "
                        f"{training.ZERO_THRESHOLD:g})",
                 ylabel=f"validation {metric}")
        axis.legend(fontsize=7)
        figure.tight_layout()
        files.append(_save(figure, pyplot, out, f"sparsity-{dataset}.png"))
    return files


def _save(figure, pyplot, out, name):
    figure.savefig(os.path.join(out, name), dpi=90)
    pyplot.close(figure)
    return name


def write_markdown(out, summary, rows, best, plots):
    """report.md in `out`."""
    regime = summary["regime"]
    lines = [
        "# tfreg compare", "",
        f"Command: `{summary['command']}`", "",
        f"{summary['keras']}, TensorFlow {summary['tensorflow']}. Model: "
        f"{regime['model']}, every kernel regularized through `tfreg.apply`; "
        f"{regime['epochs']} epochs, batch {training.BATCH_SIZE}, Adam "
        f"{training.LEARNING_RATE:g}, `jit_compile=True`. Seeds "
        f"{regime['seeds']}: each candidate trains once per seed (its own "
        "initial weights and batch order; a compiled model, shared by the "
        "strengths of L1, L2 and GroupLasso through a `tfreg.Strength`, "
        "restarted for each run). Strengths: "
        f"{regime['strengths']}.", "",
        "Data:", ""]
    lines += [f"- {text}" for text in summary["datasets_described"]]
    lines += ["", "## Verdict", ""]
    lines += [f"- {text}" for text in summary["verdict_lines"]]
    lines += ["", "The best candidate is picked on the validation split; "
              "its test scores come from the held-out test split, which no "
              "choice looked at.", "",
              "## Results", ""]
    lines += [f"- {column.header}: {column.definition}." for column in COLUMNS
              if column.definition]
    lines += ["- `*`: lowest mean val loss for the dataset.", ""]
    for dataset, text in tables(rows, best, markdown=True).items():
        lines += [f"### {dataset}", "", text, ""]
    if summary["notes"]:
        lines += ["Notes:", ""] + [f"- {note}" for note in summary["notes"]]
        lines.append("")
    lines += ["## Best models", ""]
    for name, export in summary["exports"].items():
        match = "match" if export["predictions_match"] else "DO NOT match"
        agree = ("equals" if export["regularization_loss_matches"]
                 else "DIFFERS FROM")
        lines.append(
            f"- {name}: {summary['verdicts'][name]['best']} (last seed), "
            f"exported with `{export['how']}` to "
            f"`{os.path.basename(export['path'])}/`, reloaded with "
            f"`tf.saved_model.load`: predictions {match} (max |difference| "
            f"{export['max_abs_difference']:.2g}); its `regularization_loss` "
            f"signature ({export['regularization_loss']:.6g}) {agree} the "
            "live model's penalty.")
    if plots:
        lines += ["", "## Plots", "",
                  "Curves and histograms: the best strength of each "
                  "regularizer. Sparsity: every candidate.", ""]
        lines += [f"![{name}]({name})" for name in plots]
    lines += ["", f"All numbers: `results.json`. Wall time: "
              f"{summary['wall_seconds']:.1f} s.", ""]
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
