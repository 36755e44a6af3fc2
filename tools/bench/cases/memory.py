"""The memory case: peak extra memory of every regularizer class."""

import numpy as np
import tensorflow as tf

import tfreg
from tools.bench.harness import Case, Limit, print_rows, size_name, Target
from tools.bench.workloads import closed_form_priors, value_and_gradient
from tools.bench.writer import table


def memory_contenders(rows):
    """Class name -> (regularizer, float32 weight) with `rows` x 64 elements.

    Kernels are (rows, 64); Orthogonal(mode="rows") takes (64, rows) (a
    Gram matrix of its rows), MeanFieldKL (2, rows / 2, 64), the activity
    penalties (batch, features) = (rows, 64), KLSparsity's in (0, 1).
    """
    import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(2)

    def weight(shape, low=None):
        values = (rng.uniform(0.05, 0.95, size=shape) if low
                  else rng.normal(0.0, 0.05, size=shape))
        return tf.constant(values.astype(np.float32))

    kernel = (rows, 64)
    reference = np.zeros(kernel, np.float32)
    # Tensors are immutable and a call's extra memory excludes its input:
    # the kernel-shaped classes share one (drawing 4M normals per class
    # took seconds).
    shared = weight(kernel)
    return {
        "L1": (tfreg.L1(0.01), shared),
        "L2": (tfreg.L2(0.01), shared),
        "L1L2": (tfreg.L1L2(0.01, 0.01), shared),
        "L2SP": (tfreg.L2SP(0.01, reference=reference), shared),
        "Orthogonal rows": (tfreg.Orthogonal(0.01), weight((64, rows))),
        "Orthogonal columns": (tfreg.Orthogonal(0.01, mode="columns"),
                               shared),
        "GroupLasso": (tfreg.GroupLasso(0.01), shared),
        "SparseGroupLasso": (tfreg.SparseGroupLasso(0.01, 0.01), shared),
        "SoftOrthogonal": (tfreg.SoftOrthogonal(0.01), shared),
        "SpectralNorm": (tfreg.SpectralNorm(0.01), shared),
        "SRIP": (tfreg.SRIP(0.01), shared),
        "NuclearNorm": (tfreg.NuclearNorm(0.01), shared),
        "DeCov": (tfreg.DeCov(0.01), shared),
        "KLSparsity": (tfreg.KLSparsity(0.01), weight(kernel, low=True)),
        **{name: (prior, shared)
           for name, prior in closed_form_priors().items()},
        "MeanFieldKL": (tfreg.priors.MeanFieldKL(1.0),
                        weight((2, rows // 2, 64))),
        "Prior(tfd.Gumbel)": (tfreg.priors.Prior(
            tfp.distributions.Gumbel(0.0, 1.0)), shared),
    }


MEMORY_MODES = ("eager tape", "eager value", "tf.function", "jit")


def run_memory(settings):
    from tools import memory  # pylint: disable=g-import-not-at-top
    rows_of = settings.pick(full=1 << 18, quick=1 << 16, tiny=1 << 10)
    contenders = memory_contenders(rows_of)
    # Compiling every class takes a minute: a smoke run measures two.
    names = settings.pick(full=list(contenders), tiny=["L2", "Horseshoe"])
    out = []
    for name in names:
        regularizer, x = contenders[name]
        graph = tf.function(value_and_gradient)
        xla = tf.function(value_and_gradient, jit_compile=True)
        calls = {
            "eager tape": lambda r=regularizer, x=x: value_and_gradient(r, x),
            "eager value": lambda r=regularizer, x=x: r(x),
            "tf.function": lambda r=regularizer, x=x, f=graph: f(r, x),
            "jit": lambda r=regularizer, x=x, f=xla: f(r, x),
        }
        nbytes = 4 * x.shape.num_elements()
        row = {"contender": name, "elements": x.shape.num_elements(),
               "bound": memory.bound(regularizer)}
        for mode in MEMORY_MODES:
            row[mode] = memory.peak_extra_ratio(calls[mode], nbytes)
        out.append(row)
        print_rows([row], ("contender", "elements") + MEMORY_MODES)
    return out


def table_memory(rows):
    """One row per mode, one column per class (the document stays short)."""
    if not rows:
        return ""
    names = [row["contender"] for row in rows]
    by_mode = [dict({"mode": mode}, **{row["contender"]: row[mode]
                                        for row in rows})
               for mode in MEMORY_MODES]
    return (f"{size_name(rows[0]['elements'])} float32 elements; cells: peak "
            "extra memory of one call (the gradient it returns included) "
            "over the weight's bytes.\n\n"
            + table(by_mode, [("mode", "mode")]
                    + [(name, name) for name in names]))


_GOAL_MEMORY = "peak extra memory <= its bound x the weight's bytes"


def targets_memory(rows, settings):
    """The worst class of each bound (tools/memory.py), over every mode."""
    del settings
    out = []
    for bound in sorted({row["bound"] for row in rows}):
        worst = max((row for row in rows if row["bound"] == bound),
                    key=lambda row: max(row[mode] for mode in MEMORY_MODES))
        measured = max(worst[mode] for mode in MEMORY_MODES)
        out.append(Target(f"{_GOAL_MEMORY} ({bound:g})",
                          f"worst: {worst['contender']}",
                          size_name(worst["elements"]), measured,
                          measured <= bound))
    return out


MEMORY_LIMITS = Limit("Memory at small sizes", (
    "The priors of `tfreg.priors` go by blocks of 1M elements (Horseshoe: "
    "512K) above that size; a smaller tensor keeps its whole chain of "
    "intermediates, so its multiple is larger (Horseshoe: 17x, under "
    "40 MB), and the blocks' own weigh more on a few million elements. "
    "MeanFieldKL differentiates "
    "through its softplus by autodiff. Orthogonal(mode=\"rows\") needs a "
    "rows x rows Gram matrix, 64 x 64 here."))

MEMORY_CASE = Case(
    name="memory",
    title="Peak memory",
    about="peak extra memory of every regularizer class on one large "
          "float32 tensor in eager mode (value+gradient with a tape, value "
          "only), tf.function and jit_compile (value+gradient), as a "
          "multiple of the weight's bytes (`tools/memory.py`: TF's CPU "
          "allocator peak, and the resident-set peak).",
    run=run_memory,
    table=table_memory,
    targets=targets_memory,
    limits={_GOAL_MEMORY: (MEMORY_LIMITS,)})
