"""The document: the whole of BENCHMARKS.md from one run's results."""

from tools.bench.harness import RUN_LIMITS, Target

def cell(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def table(rows, columns):
    """A Markdown table: `columns` is (heading, key or callable(row)) pairs."""
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(
            cell(key(row) if callable(key) else row[key])
            for _, key in columns) + " |")
    return "\n".join(lines)


def verdict(target):
    text = f"{target.measured:.3g} {'✓' if target.met else '✗'}"
    return text if target.met else f"**{text}**"


def targets_table(targets):
    """One row per (goal, subject), one column per condition (size, mode),
    each cell one number with its verdict; a goal is named on its first row."""
    conditions = list(dict.fromkeys(t.condition for t in targets))
    rows = {}
    for target in targets:
        row = rows.setdefault((target.goal, target.subject),
                              {"subject": target.subject})
        row[target.condition] = verdict(target)
    goals = [goal for goal, _ in rows]
    return table(
        [dict(row, target=goal if index == 0 or goals[index - 1] != goal
              else "")
         for index, ((goal, _), row) in enumerate(rows.items())],
        [("target", "target"), ("subject", "subject")]
        + [(c or "measured", lambda r, c=c: r.get(c, "")) for c in conditions])


def limits_of(goal, cases):
    """The `Limit`s of the first key of the cases' (or the run's) limits that
    `goal` begins with."""
    for limits in [case.limits for case in cases] + [RUN_LIMITS]:
        for key, found in limits.items():
            if goal.startswith(key):
                return found
    return ()


HOW_TO_RUN = """\
The bench (`tools/bench/`) is a harness, not a test. Each case runs its contenders
interleaved in one process (A B C, B C A, C A B, ...: the order rotates every
round) after a warm-up and reports medians and the median of per-round ratios,
so a noisy machine shifts all contenders alike. Variables are captured by the
timed `tf.function`s, never passed as arguments. Compare ratios, not times,
across runs: this machine is shared and its speed moves between runs.

```sh
python tools/bench.py --quick --write BENCHMARKS.md   # quick run (a target: 3 minutes)
python tools/bench.py --write BENCHMARKS.md           # full run, about 30 minutes
python tools/bench.py --cases optimizer,outcomes --json out.json   # some cases
python tools/bench.py --from-json quick.json --from-json out.json --write BENCHMARKS.md
```

The last command writes one document of several saved runs: each case comes
from the last file that has it (its section names the run), and Machine lists
every run. Long outcome cases (accuracy, zeros, parameter counts) can so run
apart from the timed ones. The history of earlier rounds is in git. Cases:"""


def unwrapped(text):
    """Each prose paragraph of `text` on one line (code blocks kept), so the
    document stays short."""
    return "\n\n".join(
        block if block.startswith("```") else block.replace("\n", " ")
        for block in text.strip("\n").split("\n\n"))


def merged(runs):
    """One document's results from several runs' (in the order given).

    Each case comes from the last run that has it, with its targets; a
    run's own target (`--quick` in time) is kept for every run. The result
    lists the runs (`machine` of each, with its `case_seconds`) under
    "runs" and the run each case came from under "case_run" (an index).
    """
    if len(runs) == 1:
        return runs[0]
    case_run = {}
    for index, results in enumerate(runs):
        for name in results["cases"]:
            case_run[name] = index
    targets = []
    for index, results in enumerate(runs):
        for target in results["targets"]:
            if target["case"] == "run":
                targets.append(dict(target, subject=f"run {index + 1}: "
                                    f"{target['subject']}"))
            elif case_run[target["case"]] == index:
                targets.append(target)
    return {
        "runs": [dict(results["machine"],
                      case_seconds=results["case_seconds"],
                      case_cpu_seconds=results.get("case_cpu_seconds"))
                 for results in runs],
        "cases": {name: runs[index]["cases"][name]
                  for name, index in case_run.items()},
        "case_run": case_run,
        "targets": targets,
    }


def _machine_lines(meta, case_seconds, case_cpu_seconds=None):
    cpu = case_cpu_seconds or {}
    seconds = ", ".join(
        f"{name} {s:.0f} s" + (f" (CPU {cpu[name]:.0f} s)" if name in cpu
                               else "")
        for name, s in case_seconds.items())
    return [
        f"- {meta['cpu']}, {meta['cores']} cores, {meta['platform']}; "
        f"Python {meta['python']}, TensorFlow {meta['tensorflow']}, Keras "
        f"{meta['keras']} ({'tf_keras' if meta['legacy'] else 'Keras 3'}), "
        f"`TF_CPU_ALLOCATOR_USE_BFC={meta['cpu_allocator_use_bfc']}`",
        f"- load average (1/5/15 min) before {meta['load_before']}, after "
        f"{meta['load_after']}; peak memory {meta['max_rss_gb']:.1f} GB; "
        f"wall time {meta['seconds']:.0f} s"
        + (f", user + system CPU time {meta['cpu_seconds']:.0f} s"
           if "cpu_seconds" in meta else "") + f" ({seconds})",
    ]


def document(results, cases):
    """The whole of BENCHMARKS.md from one run's results, or several runs'
    (`merged`)."""
    runs = results.get("runs")
    ran = [case for case in cases if case.name in results["cases"]]
    targets = [Target(**t) for t in results["targets"]]
    if runs:
        generated = (f"Generated from {len(runs)} runs (under Machine); "
                     "rerun them rather than editing this file.")
    else:
        meta = results["machine"]
        generated = (f"Generated by `{meta['command']}` on {meta['date']} at "
                     f"commit {meta['commit']}; rerun it rather than editing "
                     "this file.")
    lines = ["# Benchmarks", "", generated,
             "", "## How to run", "", unwrapped(HOW_TO_RUN)]
    lines[-1] += " " + "; ".join(f"`{case.name}`: {case.about.rstrip('.')}"
                                 for case in cases) + "."
    lines += ["", "## Machine", ""]
    if runs:
        for index, meta in enumerate(runs, 1):
            cases_from = [name for name, run in results["case_run"].items()
                          if run == index - 1]
            lines += [f"Run {index}: `{meta['command']}` on {meta['date']} at "
                      f"commit {meta['commit']}; in this document: "
                      + (", ".join(cases_from) or "none of its cases") + ".",
                      ""] + _machine_lines(meta, meta["case_seconds"],
                                           meta["case_cpu_seconds"]) + [""]
        lines.pop()
    else:
        lines += _machine_lines(results["machine"], results["case_seconds"],
                                results.get("case_cpu_seconds"))
    met = sum(t.met for t in targets)
    source = "its case's run" if runs else "this run"
    lines += ["", "## Targets", "",
              f"{met} of {len(targets)} measurements meet their target. "
              f"Each cell is one number of {source}: ✓ met, ✗ not met.", ""]
    titles = {case.name: case.title for case in cases}
    titles["run"] = "These runs" if runs else "This run"
    for name, title in titles.items():
        of_case = [t for t in targets if t.case == name]
        if of_case:
            lines += [f"### {title}", targets_table(of_case), ""]
    unmet = {}
    for target in targets:
        if not target.met:
            unmet.setdefault(target.goal, []).append(target)
    if unmet:
        lines += ["## What limits the unmet targets", ""]
        cited = {}
        for goal in unmet:
            for limit in limits_of(goal, cases) or (None,):
                cited.setdefault(limit, []).append(goal)
        for limit, goals in cited.items():
            which = "; ".join(goals)
            lines.append(f"- **{limit.title}.** {limit.text} ({which})"
                         if limit else f"- **Not analysed:** {which}.")
        lines.append("")
    lines += ["## Results"]
    for case in ran:
        lines += ["", f"### {case.title}", ""]
        if runs:
            lines += [f"From run {results['case_run'][case.name] + 1}.", ""]
        lines.append(case.table(results["cases"][case.name]))
    return "\n".join(lines) + "\n"
