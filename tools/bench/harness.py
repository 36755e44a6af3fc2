"""The harness: a run's scale, its cases, and how contenders are timed.

Every case runs its contenders interleaved in one process (A B C, B C A,
C A B, ...: the order rotates every round) after a warm-up, and states
ratios as the median of per-round ratios, so that a noisy machine shifts all
contenders alike. `run` runs the chosen cases and records the machine (CPU,
versions, `TF_CPU_ALLOCATOR_USE_BFC`, load average before and after, peak
memory).
"""

import dataclasses
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from typing import Callable

import tensorflow as tf

from tfreg import _keras

keras = _keras.keras

SCALES = ("full", "quick", "tiny")
QUICK_SECONDS = 180  # `--quick` must finish within this (a target).


@dataclasses.dataclass(frozen=True)
class Settings:
    """The scale of one run; every case picks its own sizes from it."""

    scale: str = "full"
    rounds_override: int | None = None

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"Invalid value for argument `scale`. Expected "
                             f"one of {SCALES}. Received: scale={self.scale}")

    def pick(self, full, quick=None, tiny=None):
        """`full`, `quick` or `tiny` by scale (quick defaults to full, tiny to quick)."""
        quick = full if quick is None else quick
        tiny = quick if tiny is None else tiny
        return {"full": full, "quick": quick, "tiny": tiny}[self.scale]

    def rounds(self, full, quick=None, tiny=1):
        """Timed rounds: `--rounds` if given, else picked by scale."""
        if self.rounds_override is not None:
            return self.rounds_override
        return self.pick(full, quick, tiny)


@dataclasses.dataclass(frozen=True)
class Target:
    """One measured number against a bound, e.g. 0.93 >= 0.70.

    `goal` states the target (it groups rows and keys `Case.limits`),
    `subject` what was measured, `condition` where (size, mode; "" if the
    goal says it all).
    """

    goal: str
    subject: str
    condition: str
    measured: float
    met: bool
    case: str = ""


@dataclasses.dataclass(frozen=True)
class Limit:
    """What bounds a target on this machine: a short title and a paragraph."""

    title: str
    text: str


@dataclasses.dataclass(frozen=True)
class Case:
    """A benchmark case: how it runs, how it reads, what it must meet.

    `limits` maps a target's goal (or the beginning of it) to the `Limit`s
    that bound it; the document prints them when that goal has an unmet
    target.
    """

    name: str
    title: str
    about: str
    run: Callable[[Settings], list]
    table: Callable[[list], str]
    targets: Callable[[list, Settings], list] = lambda rows, settings: []
    limits: dict = dataclasses.field(default_factory=dict)


def interleave(contenders, rounds, warmup=1, repeat=1):
    """Times each contender `repeat` calls per round: A B C, B C A, C A B, ...

    The order rotates every round, so no contender always runs first (after
    the previous round's last) or last.

    Args:
      contenders: dict name -> zero-argument callable that blocks until done.
      rounds: number of timed rounds.
      warmup: untimed rounds first.
      repeat: calls per timed sample.

    Returns:
      dict name -> list of per-call seconds, one per round.
    """
    for _ in range(warmup):
        for run in contenders.values():
            run()
    times = {name: [] for name in contenders}
    for index in range(rounds):
        for name in rotated(list(contenders), index):
            run = contenders[name]
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            times[name].append((time.perf_counter() - start) / repeat)
    return times


def page_faults_per_call(run, calls=3):
    """Minor page faults of the process per call of `run` (after it ran once).

    Fresh pages touched for the first time: with TF's default CPU allocator,
    XLA temporaries above glibc's 32 MB mmap threshold can be mapped and
    faulted in anew on every call (docs/performance.md).
    """
    run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def rotated(names, by):
    by %= len(names)
    return names[by:] + names[:by]


def median(values):
    return statistics.median(values)


def round_ratios(numerator, denominator):
    return [a / b for a, b in zip(numerator, denominator)]


def rounds_within(contenders, rounds, repeat, seconds, most=1000):
    """`rounds`, or as many more as fit in `seconds`, at most `most`.

    Times one round, the second: a contender's first call may retrace.
    """
    for _ in range(2):
        start = time.perf_counter()
        for run in contenders.values():
            for _ in range(repeat):
                run()
    fit = int(seconds / max(time.perf_counter() - start, 1e-9))
    return max(rounds, min(fit, most))


def mode_name(jit):
    return "XLA" if jit else "graph"


def size_name(params):
    """4000000 -> '4M', 20000 -> '20K'."""
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if params >= scale:
            return f"{params / scale:.0f}{unit}"
    return str(params)


def print_rows(rows, keys):
    for row in rows:
        print("  ".join(
            f"{key}={row[key]:.3g}" if isinstance(row[key], float)
            else f"{key}={row[key]}" for key in keys), flush=True)


def find(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


QUICK_GOAL = f"`--quick` finishes in under {QUICK_SECONDS} s"
# Limits of the run's own target (not a case's).
RUN_LIMITS = {QUICK_GOAL: (Limit("Machine load", (
    "The run's time follows the machine's load (the load average before and "
    "after is under Machine).")),)}


def run_targets(meta, cases):
    """The run's own target: a quick run of every case of `cases` in time."""
    if meta["scale"] != "quick" or meta["cases"] != [c.name for c in cases]:
        return []
    return [Target(QUICK_GOAL, "whole run (s)", "", meta["seconds"],
                   meta["seconds"] <= QUICK_SECONDS, case="run")]


def _git_commit():
    # Under `bazel run` this file is in the runfiles tree, outside the clone.
    clone = os.environ.get("BUILD_WORKSPACE_DIRECTORY",
                           os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True,
            text=True, check=True, cwd=clone).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_seconds():
    """User + system CPU time of this process so far (all its threads):
    what a run costs whatever the machine's load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_cases(cases, settings, case_names, results, json_path):
    for case in cases:
        if case.name not in case_names:
            continue
        # A full collection walks every tracked object (TensorFlow's and
        # Keras' modules: ~0.4 s), and the cases collect often (the memory
        # case before every measure, Keras 3's `clear_session` each time):
        # what exists before a case (imports, earlier cases' caches and
        # rows) is frozen, so only the case's own objects are walked.
        gc.collect()
        gc.freeze()
        begin, cpu = time.time(), _cpu_seconds()
        results["cases"][case.name] = case.run(settings)
        results["case_seconds"][case.name] = round(time.time() - begin, 1)
        results["case_cpu_seconds"][case.name] = round(
            _cpu_seconds() - cpu, 1)
        if json_path:  # what has run so far survives a crash of a later case
            with open(json_path, "w") as f:
                json.dump(results, f, indent=1)


def run(cases, settings, case_names, command, json_path=None):
    """Runs the cases of `cases` named in `case_names`, in the order of
    `cases`; returns the results (JSON-ready)."""
    start = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = {"cases": {}, "case_seconds": {}, "case_cpu_seconds": {},
               "targets": []}
    try:
        _run_cases(cases, settings, case_names, results, json_path)
    finally:
        gc.unfreeze()
    results["machine"] = {
        "command": command, "scale": settings.scale,
        "cases": [c.name for c in cases if c.name in case_names],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "cpu": _cpu_name(), "cores": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "legacy": _keras.LEGACY,
        "cpu_allocator_use_bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC",
                                                "unset"),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": time.time() - start,
        "cpu_seconds": _cpu_seconds(),
        "max_rss_gb": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    targets = []
    for case in cases:
        if case.name in results["cases"]:
            targets += [dataclasses.replace(target, case=case.name)
                        for target in case.targets(results["cases"][case.name],
                                                   settings)]
    targets += run_targets(results["machine"], cases)
    results["targets"] = [dataclasses.asdict(t) for t in targets]
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    return results
