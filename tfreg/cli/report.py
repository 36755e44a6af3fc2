"""The comparison's report: tables, plots and the Markdown file."""

import math
import os

from tfreg.cli import training


HEADER = ("dataset", "regularizer", "strength", "val loss", "val metric",
          "near-zero", "penalty", "penalty share", "ms/step")


def table_rows(results, best):
    rows = []
    for result in results:
        mark = " *" if result is best.get(result["dataset"]) else ""
        rows.append((
            result["dataset"], result["regularizer"] + mark,
            result["setting"], f"{result['val_loss']:.4f}",
            f"{result['metric']} {result['val_metric']:.4f}",
            f"{result['near_zero']:.1%}", f"{result['penalty']:.4g}",
            f"{result['penalty_share']:.1%}",
            f"{result['ms_per_step']:.2f}"))
    return rows


def format_text_table(rows):
    widths = [max(len(cell) for cell in column)
              for column in zip(HEADER, *rows)]
    def render(cells):
        return "  ".join(cell.ljust(width)
                         for cell, width in zip(cells, widths)).rstrip()
    return "\n".join([render(HEADER), render(["-" * w for w in widths])]
                     + [render(row) for row in rows])


def format_markdown_table(rows):
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _best_per_family(results, dataset):
    best = {}
    for result in results:
        if result["dataset"] != dataset:
            continue
        current = best.get(result["regularizer"])
        if current is None or result["val_loss"] < current["val_loss"]:
            best[result["regularizer"]] = result
    return best


def plot(results, kernels, out):
    """Validation curves and weight histograms; returns the PNG file names."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    from matplotlib import pyplot

    files = []
    for dataset in dict.fromkeys(result["dataset"] for result in results):
        best = _best_per_family(results, dataset)
        figure, axes = pyplot.subplots(1, 2, figsize=(11, 4))
        metric = next(iter(best.values()))["metric"]
        for result in best.values():
            label = f"{result['regularizer']} {result['setting']}"
            epochs = range(1, len(result["curves"]["val_loss"]) + 1)
            axes[0].plot(epochs, result["curves"]["val_loss"], label=label)
            axes[1].plot(epochs, result["curves"]["val_metric"],
                         label=label)
        axes[0].set(title=f"{dataset}: validation loss (without penalty)",
                    xlabel="epoch", ylabel="loss")
        axes[1].set(title=f"{dataset}: validation {metric}", xlabel="epoch",
                    ylabel=metric)
        axes[0].legend(fontsize=7)
        figure.tight_layout()
        name = f"curves-{dataset}.png"
        figure.savefig(os.path.join(out, name), dpi=90)
        pyplot.close(figure)
        files.append(name)

        columns = min(4, len(best))
        rows = math.ceil(len(best) / columns)
        figure, axes = pyplot.subplots(rows, columns, squeeze=False,
                                       figsize=(3.2 * columns, 2.6 * rows))
        for axis, result in zip(axes.flat, best.values()):
            values = kernels[(dataset, result["regularizer"],
                              result["setting"])]
            axis.hist(values, bins=60, log=True)
            axis.set_title(f"{result['regularizer']} {result['setting']}",
                           fontsize=8)
        for axis in list(axes.flat)[len(best):]:
            axis.axis("off")
        figure.suptitle(f"{dataset}: kernel weights (best strength each)")
        figure.tight_layout()
        name = f"weights-{dataset}.png"
        figure.savefig(os.path.join(out, name), dpi=90)
        pyplot.close(figure)
        files.append(name)
    return files


def write_report(out, summary, table, plots):
    lines = [
        "# tfreg compare", "",
        f"Command: `{summary['command']}`", "",
        f"{summary['keras']}, TensorFlow {summary['tensorflow']}; seed "
        f"{summary['seed']}; {summary['epochs']} epochs; batch {training.BATCH_SIZE}; "
        f"Adam {training.LEARNING_RATE:g}; MLP {list(training.HIDDEN_UNITS)} (ReLU) with every "
        "kernel regularized through `tfreg.apply`; trained with "
        "`jit_compile=True`. The strengths of one regularizer train side by "
        "side as identical towers (same initial weights, same batches) of one "
        "compiled model; each tower's loss and gradients are its own.", "",
        "Data:", ""]
    lines += [f"- {text}" for text in summary["datasets_described"]]
    lines += [
        "", "## Results", "",
        "- val loss: validation data loss after the last epoch, without the "
        "penalty (cross-entropy; for regression the MSE of the standardized "
        "target).",
        "- val metric: accuracy, or mean absolute error in the target's "
        "units.",
        f"- near-zero: share of kernel weights with |w| < {training.ZERO_THRESHOLD:g}.",
        "- penalty: the regularization loss after the last epoch. Priors' "
        "-log p(w) / num_examples includes normalizing constants and can be "
        "negative.",
        "- penalty share: |penalty| / (val loss + |penalty|).",
        "- ms/step: mean time of a training step after the first (which "
        "compiles), divided by the number of towers trained in that step.",
        "- `*`: lowest val loss for the dataset.", "",
        table, ""]
    if summary["notes"]:
        lines += ["Notes:", ""] + [f"- {note}" for note in summary["notes"]]
        lines.append("")
    lines += ["## Best models", ""]
    for name, export in summary["exports"].items():
        best = summary["best"][name]
        match = "match" if export["predictions_match"] else "DO NOT match"
        text = (f"- {name}: {best['regularizer']} {best['setting']}, exported "
                f"with `{export['how']}` to "
                f"`{os.path.basename(export['path'])}/`, reloaded with "
                f"`tf.saved_model.load`: predictions {match} (max |difference| "
                f"{export['max_abs_difference']:.2g})")
        if "regularization_loss" in export:
            agree = ("equals" if export["regularization_loss_matches"]
                     else "DIFFERS FROM")
            text += (f"; its `regularization_loss` signature "
                     f"({export['regularization_loss']:.6g}) {agree} the "
                     "live model's penalty")
        lines.append(text + ".")
    if plots:
        lines += ["", "## Plots", "",
                  "Best strength of each regularizer.", ""]
        lines += [f"![{name}]({name})" for name in plots]
    lines += ["", f"All numbers: `results.json`. Wall time: "
              f"{summary['wall_seconds']:.1f} s.", ""]
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
