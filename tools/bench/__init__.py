"""Benchmark harness for tfreg: runs the cases and writes BENCHMARKS.md.

A harness, not a test. Every case runs its contenders interleaved in one
process (A B C, B C A, C A B, ...: the order rotates every round) after a
warm-up, and states ratios as the median of per-round ratios, so that a
noisy machine shifts all contenders alike. The run records the machine
(CPU, versions, `TF_CPU_ALLOCATOR_USE_BFC`, load average before and after,
peak memory) and writes the whole of BENCHMARKS.md from this one run: how
to run it, the machine, the targets with their verdicts, what limits the
unmet ones, and one table per case.

Usage (from the clone's root; `python -m tools.bench` is the same):
  python tools/bench.py --quick --write BENCHMARKS.md   # < 3 minutes
  python tools/bench.py --write BENCHMARKS.md           # full run
  python tools/bench.py --cases penalty,priors --json out.json
  python tools/bench.py --tiny      # smoke run of every case in seconds;
                                    # its numbers mean nothing
  python tools/bench.py --from-json out.json --write BENCHMARKS.md
                                    # the document of a saved run
  python tools/bench.py --from-json a.json --from-json b.json
                                    # one document of several runs, each
                                    # case from the last file that has it

Modules: `harness` (settings, `Case`, `Target`, `Limit`, interleaved timing,
`run`), `writer` (the document), `workloads` (weights, penalties, models and
examples that several cases share), `cli` (the command line) and `cases/`,
one module per case.

Adding a case (the extension point): write a module in `cases/` with
`run(settings) -> list[dict]`, one dict of plain JSON values per measured
row, and a `Case`, and list it in `cases.CASES`:

  Case(name="my_case", title="...", about="one sentence for the document",
       run=run_my_case,                    # settings -> rows
       table=table_my_case,                # rows -> Markdown (`writer.table`)
       targets=targets_my_case,            # (rows, settings) -> [Target]
       limits={"<a Target.goal, or its beginning>": (Limit(...), ...)})

`run` reads its sizes through `settings.pick(full=..., quick=..., tiny=...)`
(quick defaults to full, tiny to quick) and its rounds through
`settings.rounds(full=..., quick=..., tiny=...)` (`--rounds` overrides),
times contenders with `harness.interleave` and compares them with
`harness.round_ratios`. Each `Target` is one number with its verdict;
targets of one goal and subject that differ only in their condition (size,
mode) share a row of the case's targets table. A `Limit` is a titled
paragraph on what bounds a target; the document prints each one once, under
the unmet targets that name it. `tests/bench_test.py` runs every case in
`CASES` at `--tiny` scale.
"""
