"""Audits every registered tfreg regularizer for XLA/TPU portability.

For each class in tfreg's registry (present and future), the audit builds the
regularizer with its defaults, lowers `(value, gradient)` of the penalty to HLO
with `tf.function(jit_compile=True).experimental_get_compiler_ir`, for float32
and for bfloat16 inputs, and fails on what does not port to a TPU:

- host callbacks and outside compilation: `send`/`recv` (host transfers),
  `infeed`/`outfeed`, custom calls whose target names a callback or the host
  (`xla_python_cpu_callback`, `SendToHost`, `RecvFromHost`, ...);
- dynamic shapes: a bounded (`<=N`) or unknown (`?`) dimension anywhere;
- custom calls outside `ALLOWED_CUSTOM_CALLS`;
- float64 (or complex128) anywhere on the bfloat16 path;
- random numbers without an explicit seed: XLA's stateful `rng` op (what
  `tf.random.uniform` and friends lower to; XLA ignores their `seed`) and
  `rng-get-and-update-state`. Stateless ops (`tf.random.stateless_*`,
  `rng-bit-generator` with an explicit key) pass;
- a value or gradient that does not compile or is not finite.

The checks read the backend-independent `stage="hlo"`; `stage="optimized_hlo"`
(after the CPU backend's passes) is only used to count fusions. Weight
regularizers are audited on a Dense kernel and a Conv2D kernel, activity
regularizers on a `(batch, units)` activation; see `kinds_of`. A class whose
constructor has required arguments cannot be built with defaults and is
skipped with that reason unless `BUILDERS` shows how to build it; a shape its
validation rejects is skipped likewise.

Prints one line per regularizer and exits 1 when any regularizer fails:

    python tools/xla_audit.py [--verbose] [--only NAME ...]
"""

import argparse
import dataclasses
import inspect
import os
import re
import sys
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__ in (None, ""):
    # Run as a script from a checkout: make `import tfreg` find the checkout.
    sys.path.insert(
        0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import tfreg  # pylint: disable=g-import-not-at-top,unused-import
from tfreg import serialization  # pylint: disable=g-import-not-at-top

# Custom-call targets that are portable to TPU. Keep this list short: every
# entry must be an annotation or expanded into HLO by a backend-independent
# XLA pass, not a computation that runs on one backend.
ALLOWED_CUSTOM_CALLS = {
    "Sharding": "sharding annotation (XlaSharding, DTensor); no computation",
    "SPMDFullToShardShape": "SPMD partitioner marker; no computation",
    "SPMDShardToFullShape": "SPMD partitioner marker; no computation",
    # tf.linalg.qr (NuclearNorm of a tall kernel): XLA's backend-independent
    # QrExpander (xla/hlo/transforms/expanders) rewrites both into plain HLO.
    "Qr": "QR decomposition; expanded into HLO by XLA's QrExpander",
    "ProductOfElementaryHouseholderReflectors": (
        "Q of a QR decomposition; expanded into HLO by XLA's QrExpander"),
}

WEIGHT_SHAPES = (("dense", (8, 4)), ("conv", (3, 3, 2, 4)))
ACTIVITY_SHAPES = (("activity", (4, 8)),)
DTYPES = (tf.float32, tf.bfloat16)

# Which inputs a class penalizes, when it is not a weight-only regularizer. A
# class may instead declare `audit_kinds = ("weight", "activity")` itself.
KINDS = {
    "L1": ("weight", "activity"),
    "L2": ("weight", "activity"),
    "L1L2": ("weight", "activity"),
    "DeCov": ("activity",),
    "KLSparsity": ("activity",),
}

# Classes that cannot be built with defaults, built for the audit from the
# input shape instead (an example of what a user passes).
BUILDERS = {
    "L2SP": lambda cls, shape: cls(reference=np.full(shape, 0.5, np.float32)),
    "Prior": lambda cls, shape: cls(
        {"class_name": "Gumbel", "parameters": {"loc": 0.0, "scale": 1.0}}),
}

# A weight past the size at which L2's sum of squares takes another form under
# XLA (tfreg/penalties.py), for the classes built on it.
_LARGE = (("large_dense", (256, 256)),)

# Weight shapes for classes that accept only a special layout or have a
# size-dependent form (instead of WEIGHT_SHAPES); a class may instead declare
# `audit_shapes` itself.
SHAPES = {
    "L2": WEIGHT_SHAPES + _LARGE,
    "L1L2": WEIGHT_SHAPES + _LARGE,
    "Normal": WEIGHT_SHAPES + _LARGE,
    # A variational layer's posterior: means in [0], scales in [1].
    "MeanFieldKL": (("posterior_dense", (2, 8, 4)),
                    ("posterior_conv", (2, 3, 3, 2, 4))),
}

_HOST_OPCODES = frozenset(
    {"send", "recv", "send-done", "recv-done", "infeed", "outfeed"})
_UNSEEDED_RNG_OPCODES = frozenset({"rng", "rng-get-and-update-state"})
_HOST_TARGET = re.compile(r"callback|host", re.IGNORECASE)
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s*([a-z][a-z0-9\-]*)\(")
_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\]")
_WIDE_TYPES = ("f64", "c128")


@dataclasses.dataclass
class CaseResult:
    """One lowering: a class on one input shape and dtype."""
    label: str
    hlo_ops: int = 0
    fusions: Optional[int] = None
    problems: list = dataclasses.field(default_factory=list)
    skipped: str = ""


@dataclasses.dataclass
class ClassResult:
    """The audit of one registered class."""
    name: str
    cases: list = dataclasses.field(default_factory=list)
    skipped: str = ""

    @property
    def problems(self):
        return [f"{case.label}: {problem}" for case in self.cases
                for problem in case.problems]

    @property
    def verdict(self):
        if self.problems:
            return "FAIL"
        if self.skipped or not any(not c.skipped for c in self.cases):
            return "SKIP"
        return "PASS"

    def line(self):
        audited = [case for case in self.cases if not case.skipped]
        parts = [f"{self.name:<20}", f"{self.verdict:<4}"]
        if self.skipped:
            parts.append(f"skipped: {self.skipped}")
            return "  ".join(parts)
        parts.append(f"lowerings={len(audited)}")
        parts.append(f"hlo_ops={_span(c.hlo_ops for c in audited)}")
        fusions = [c.fusions for c in audited if c.fusions is not None]
        parts.append(f"fusions={_span(fusions) if fusions else 'n/a'}")
        notes = [f"{c.label} skipped ({c.skipped})"
                 for c in self.cases if c.skipped]
        if not audited and not notes:
            notes.append("nothing to audit")
        parts.extend(self.problems + notes)
        return "  ".join(parts)


def _span(values):
    values = list(values)
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


# Every class in tfreg's registry, once, sorted by name (the audit's subjects).
registered_classes = serialization.registered_classes


def kinds_of(cls):
    """("weight",), ("activity",) or both: what `cls` regularizes."""
    kinds = getattr(cls, "audit_kinds", None) or KINDS.get(cls.__name__,
                                                            ("weight",))
    unknown = set(kinds) - {"weight", "activity"}
    if unknown:
        raise ValueError(
            f"Invalid `audit_kinds` of {cls.__name__}. Expected 'weight' "
            f"and/or 'activity'. Received: audit_kinds={kinds!r}")
    return tuple(kinds)


def shapes_of(cls):
    """(name, shape) pairs of the weights `cls` is audited on."""
    return (getattr(cls, "audit_shapes", None)
            or SHAPES.get(cls.__name__, WEIGHT_SHAPES))


def required_arguments(cls):
    """Constructor arguments without a default."""
    parameters = inspect.signature(cls.__init__).parameters
    return [name for name, p in parameters.items()
            if name != "self" and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _instructions(hlo_text):
    """(opcode, line without quoted strings) per HLO instruction."""
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(_QUOTED.sub('""', line))
        if not match:
            continue
        rest = match.group(1)
        if rest.startswith("("):  # tuple shape
            depth = 0
            for index, char in enumerate(rest):
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    break
            after_shape = rest[index + 1:]
        else:
            after_shape = rest.split(" ", 1)[1] if " " in rest else ""
        opcode = _OPCODE.match(after_shape)
        yield (opcode.group(1) if opcode else ""), match.group(0)


def check_hlo(hlo_text, bfloat16_path=False):
    """Problems that keep `hlo_text` (stage="hlo") from porting to TPU."""
    problems = []

    def add(problem):
        if problem not in problems:
            problems.append(problem)

    for target in _TARGET.findall(hlo_text):
        if _HOST_TARGET.search(target):
            add(f"host callback (custom call {target!r})")
        elif target not in ALLOWED_CUSTOM_CALLS:
            add(f"custom call {target!r} is not in the allowlist")
    for opcode, line in _instructions(hlo_text):
        if opcode in _HOST_OPCODES:
            add(f"host transfer / outside compilation ({opcode})")
        if opcode in _UNSEEDED_RNG_OPCODES:
            add(f"random op without an explicit seed ({opcode}; use "
                "tf.random.stateless_*)")
        for element_type, dims in _SHAPE.findall(line):
            if "<=" in dims or "?" in dims:
                add(f"dynamic shape {element_type}[{dims}]")
            if bfloat16_path and element_type in _WIDE_TYPES:
                add(f"{element_type} on the bfloat16 path")
    return problems


def count_ops(hlo_text):
    """Number of HLO instructions in every computation of the module."""
    return sum(1 for _ in _instructions(hlo_text))


def count_fusions(optimized_hlo_text):
    """Number of fusion instructions after the backend's passes."""
    return sum(1 for opcode, _ in _instructions(optimized_hlo_text)
               if opcode == "fusion")


def _value_and_gradient(regularizer):
    def value_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = regularizer(x)
        return value, tape.gradient(value, x)
    return tf.function(value_and_gradient, jit_compile=True)


def _sample(kind, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if kind == "activity":  # in (0, 1): valid for sigmoid-activation penalties
        values = rng.uniform(0.05, 0.95, size=shape)
    else:
        values = rng.normal(size=shape)
    return tf.constant(values, dtype)


def audit_case(regularizer, kind, shape_name, shape, dtype):
    """Lowers value and gradient of `regularizer` on one input and checks it."""
    result = CaseResult(label=f"{shape_name}{list(shape)}/{dtype.name}")
    x = _sample(kind, shape, dtype, seed=len(result.label))
    function = _value_and_gradient(regularizer)
    try:
        function.get_concrete_function(x)
    except ValueError as error:
        # Raised while tracing the Python code, before XLA sees anything: the
        # class's validation rejects this input (e.g. a rank). That is not a
        # portability issue.
        result.skipped = f"rejects this input: {_first_line(error)}"
        return result
    try:
        compiler_ir = function.experimental_get_compiler_ir(x)
        hlo = compiler_ir(stage="hlo")  # tf2xla runs here, lazily
    except Exception as error:  # pylint: disable=broad-except
        result.problems.append(f"does not lower: {_first_line(error)}")
        return result
    result.hlo_ops = count_ops(hlo)
    result.problems.extend(check_hlo(hlo, bfloat16_path=dtype == tf.bfloat16))
    try:
        result.fusions = count_fusions(compiler_ir(stage="optimized_hlo"))
    except Exception:  # pylint: disable=broad-except
        result.fusions = None  # the stage is not available on every build
    try:
        value, gradient = function(x)
    except Exception as error:  # pylint: disable=broad-except
        result.problems.append(f"does not run compiled: {_first_line(error)}")
        return result
    if not np.isfinite(float(value)):
        result.problems.append(f"non-finite value {float(value)}")
    if gradient is not None and not np.all(
            np.isfinite(tf.cast(gradient, tf.float32).numpy())):
        result.problems.append("non-finite gradient")
    return result


def _first_line(error):
    """The message of `error`, without tf.function's traceback preamble."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0] == "in user code:":
        lines = lines[-1:]  # the original exception, after the traceback
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:240]


def build_regularizer(cls, shape):
    """`cls` with its defaults, or from BUILDERS; a str says why it cannot."""
    builder = BUILDERS.get(cls.__name__)
    if builder is not None:
        return builder(cls, shape)
    required = required_arguments(cls)
    if required:
        return (f"cannot be built with defaults (requires "
                f"{', '.join(required)})")
    try:
        return cls()
    except (TypeError, ValueError) as error:
        # A default the constructor rejects (e.g. `reference=None`) means the
        # class needs arguments that only its user can give.
        return f"cannot be built with defaults ({_first_line(error)})"


def audit_class(cls):
    """Audits `cls`, built with its defaults, on every shape of its kinds."""
    result = ClassResult(name=cls.__name__)
    for kind in kinds_of(cls):
        shapes = (shapes_of(cls) if kind == "weight" else ACTIVITY_SHAPES)
        for shape_name, shape in shapes:
            regularizer = build_regularizer(cls, shape)
            if isinstance(regularizer, str):
                result.skipped = regularizer
                result.cases = []
                return result
            for dtype in DTYPES:
                result.cases.append(
                    audit_case(regularizer, kind, shape_name, shape, dtype))
    return result


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="Audit only these class names.")
    parser.add_argument("--verbose", action="store_true",
                        help="Also print one line per lowering.")
    args = parser.parse_args(argv)
    classes = registered_classes()
    if args.only:
        classes = [cls for cls in classes if cls.__name__ in args.only]
    print(f"tfreg XLA/TPU audit: {len(classes)} registered classes, inputs "
          f"{', '.join(d.name for d in DTYPES)}, TF {tf.__version__}", file=out)
    results = []
    for cls in classes:
        result = audit_class(cls)
        results.append(result)
        print(result.line(), file=out, flush=True)
        if args.verbose:
            for case in result.cases:
                print(f"    {case.label:<28} hlo_ops={case.hlo_ops} "
                      f"fusions={case.fusions} "
                      f"{case.skipped or '; '.join(case.problems) or 'ok'}",
                      file=out)
    counts = {verdict: sum(r.verdict == verdict for r in results)
              for verdict in ("PASS", "SKIP", "FAIL")}
    print(f"{counts['PASS']} pass, {counts['SKIP']} skipped, "
          f"{counts['FAIL']} fail", file=out)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
