"""Benchmark harness for tfreg: runs the cases and writes BENCHMARKS.md."""

import argparse
import json
import os
import sys

from tools.bench import harness
from tools.bench import writer
from tools.bench.cases import CASES


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true",
                       help="Smaller sizes and fewer rounds (< 3 minutes).")
    scale.add_argument("--tiny", action="store_true",
                       help="Every case at toy sizes, one round (a smoke "
                            "test; the numbers mean nothing).")
    names = [case.name for case in CASES]
    parser.add_argument("--cases", default=",".join(names),
                        help=f"Comma-separated subset of {names}.")
    parser.add_argument("--rounds", type=int, default=None,
                        help="Timed rounds of every case (default by case "
                             "and scale); train_step adds rounds within its "
                             "time budget per model.")
    parser.add_argument("--write", metavar="PATH",
                        help="Write the Markdown document (BENCHMARKS.md).")
    parser.add_argument("--json", metavar="PATH",
                        help="Write the raw results as JSON.")
    parser.add_argument("--from-json", metavar="PATH", action="append",
                        help="Run nothing: render the document of the run "
                             "saved with --json. Repeat it for one document "
                             "of several runs (each case from the last file "
                             "that has it).")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Received: {args.rounds}")
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(names))
    if unknown:
        parser.error(f"Unknown case(s) {unknown}. Expected a subset of "
                     f"{names}.")
    # `bazel run` starts in the runfiles tree: paths are the caller's.
    caller = os.environ.get("BUILD_WORKING_DIRECTORY", "")
    write, json_path = (os.path.join(caller, path) if path else None
                        for path in (args.write, args.json))
    settings = harness.Settings("quick" if args.quick else "tiny" if args.tiny
                        else "full", args.rounds)
    command = "python tools/bench.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    if args.from_json:
        runs = []
        for path in args.from_json:
            with open(os.path.join(caller, path)) as f:
                runs.append(json.load(f))
        results = writer.merged(runs)
    else:
        results = harness.run(CASES, settings, cases, command.strip(),
                              json_path)
    text = writer.document(results, CASES)
    if write:
        with open(write, "w") as f:
            f.write(text)
    print(text)
