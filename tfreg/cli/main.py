"""The `tfreg` command line's arguments and exit codes."""

import argparse
import sys


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports bad options as one line instead of usage plus a message."""

    def error(self, message):
        raise _UsageError(message)


def _parser():
    parser = _Parser(prog="tfreg", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    compare = commands.add_parser(
        "compare",
        help="compare regularizers and strengths on a dataset",
        description="Trains a small MLP once per regularizer and strength "
                    "(jit_compile=True) and writes a report, plots, JSON and "
                    "the best model. Without --data: scikit-learn's bundled "
                    "digits and diabetes datasets.")
    compare.add_argument("--data", metavar="FILE",
                         help="FILE.csv (with --target) or FILE.npz (arrays "
                              "x, y); or 'digits' / 'diabetes'")
    compare.add_argument("--target", metavar="COLUMN",
                         help="the target column of a CSV file")
    compare.add_argument("--task", default="auto",
                         choices=("auto", "classification", "regression"))
    compare.add_argument("--regularizers", metavar="NAMES",
                         help="comma-separated, e.g. none,l2,laplace "
                              "(default: none,l2,l1,group_lasso,laplace,"
                              "horseshoe,spike_and_slab)")
    compare.add_argument("--epochs", type=int, default=8)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--out", default="compare-report",
                         help="output directory (default: ./compare-report)")
    return parser


def main(argv=None):
    """Runs the command line; returns the exit code (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except _UsageError as error:
        print(f"tfreg: error: {error}", file=sys.stderr)
        return 2
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    from tfreg.cli import UsageError
    from tfreg.cli import compare

    try:
        compare.run(data=args.data, target=args.target, task=args.task,
                    regularizers=args.regularizers, epochs=args.epochs,
                    seed=args.seed, out=args.out, argv=argv[1:])
    except UsageError as error:
        print(f"tfreg compare: error: {error}", file=sys.stderr)
        return 2
    return 0
