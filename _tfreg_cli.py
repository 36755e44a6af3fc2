"""The `tfreg` command: parses its arguments before TensorFlow loads.

This module sits beside the `tfreg` package, not in it: importing anything
in `tfreg` imports TensorFlow (the package registers its classes with Keras
when imported), which takes seconds. `--help` and bad options are answered
before that; the application, `tfreg.cli`, is imported only to run a job.

By default a job runs quietly: TensorFlow's C++ start-up and log lines
(written to file descriptor 2) are discarded and warnings from TensorFlow,
Keras and absl are ignored, while progress, results and errors still reach
the terminal. `--verbose` shows everything.
"""

import argparse
import contextlib
import os
import sys
import warnings

# The presets of `tfreg compare`: which strengths of each regularizer run
# ("quick": one, "default": one or two, "all": every listed one), seeds per
# candidate and epochs.
PRESETS = {
    "quick": {"strengths": "quick", "seeds": 3, "epochs": 20},
    "default": {"strengths": "default", "seeds": 3, "epochs": 40},
    "thorough": {"strengths": "all", "seeds": 5, "epochs": 100},
}
REGULARIZERS = ("none", "l2", "l1", "group_lasso", "l1_proximal",
                "group_lasso_proximal", "laplace", "horseshoe",
                "spike_and_slab")
_QUIET_MODULES = r"(tensorflow|tf_keras|keras|absl|google)(\.|$)"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports bad options as one line instead of usage plus a message."""

    def error(self, message):
        raise _UsageError(message)


def _int_at_least(minimum):
    """An argparse type: an int >= `minimum`."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an int >= {minimum}; got {value}")
        return value

    return parse


def parser():
    """The argument parser of the `tfreg` command."""
    top = _Parser(prog="tfreg", description="tfreg's command line.")
    commands = top.add_subparsers(dest="command", metavar="COMMAND",
                                  parser_class=_Parser)
    default, quick, thorough = (PRESETS[name] for name in
                                ("default", "quick", "thorough"))
    compare = commands.add_parser(
        "compare",
        help="which regularizer, how strong, and is it worth it",
        description=(
            "Trains a model once per candidate (regularizer and strength) "
            "and seed (jit_compile=True) and reports, per candidate, the "
            "validation loss and metric as mean and spread over the seeds, "
            "the share of near-zero weights, the penalty and the time per "
            "step, with a verdict per dataset: the best candidate, its gain "
            "over `none` and whether that gain exceeds the seed spread. "
            "Writes report.md, plots, results.json and the best model "
            "(exported and reloaded) to --out. Without --data: "
            "scikit-learn's digits (300 training rows) and diabetes, on an "
            "MLP wide enough to overfit them."))
    source = compare.add_argument_group("data and model")
    source.add_argument("--data", metavar="FILE",
                        help="FILE.csv (with --target) or FILE.npz (arrays "
                             "x, y); or 'digits' / 'diabetes'")
    source.add_argument("--target", metavar="COLUMN",
                        help="the target column of a CSV file")
    source.add_argument("--task", default="auto",
                        choices=("auto", "classification", "regression"))
    source.add_argument("--model", metavar="FILE",
                        help="a saved functional Keras model (FILE.keras, or "
                             "FILE.h5) to compare on instead of the MLP: "
                             "each candidate and seed trains a fresh copy "
                             "(new initial weights) with the regularizer "
                             "applied by tfreg.apply. Files holding code "
                             "(a Lambda layer, a serialized function) and "
                             "SavedModel directories are refused")
    source.add_argument("--train-rows", type=_int_at_least(1), metavar="N",
                        help="train on the first N rows of the training "
                             "split (default: 300 for digits, all otherwise)")
    sweep = compare.add_argument_group("what to compare")
    sweep.add_argument("--regularizers", metavar="NAMES",
                       help="comma-separated, e.g. none,l2,laplace (default: "
                            f"{','.join(REGULARIZERS)}); any registered tfreg "
                            "name runs at its default arguments")
    presets = sweep.add_mutually_exclusive_group()
    presets.add_argument(
        "--quick", dest="preset", action="store_const", const="quick",
        help=f"one strength per regularizer, {quick['seeds']} seeds, "
             f"{quick['epochs']} epochs")
    presets.add_argument(
        "--thorough", dest="preset", action="store_const", const="thorough",
        help=f"every listed strength, {thorough['seeds']} seeds, "
             f"{thorough['epochs']} epochs (default: one or two strengths, "
             f"{default['seeds']} seeds, {default['epochs']} epochs)")
    sweep.add_argument("--seeds", type=_int_at_least(1), metavar="N",
                       help="runs per candidate (overrides the preset)")
    sweep.add_argument("--epochs", type=_int_at_least(1), metavar="N",
                       help="epochs per run (overrides the preset)")
    sweep.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S",
                       help="first seed; also the train/validation split's "
                            "(default: 0)")
    output = compare.add_argument_group("output")
    output.add_argument("--out", default="compare-report", metavar="DIR",
                        help="output directory (default: ./compare-report)")
    output.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and log lines and "
                             "library warnings")
    compare.set_defaults(preset="default")
    _size_parser(commands)
    return top


def _number(text):
    """An argparse type: a float."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number: {text!r}") from None


def _size_parser(commands):
    size = commands.add_parser(
        "size",
        help="how small can my model get, at what accuracy",
        description=(
            "From a trained classifier (--model, weights kept), trains on "
            "with group lasso over its coupled channel groups, sparse group "
            "lasso and network slimming through the proximal optimizer at "
            "a sweep of strengths, shrinks (tfreg.shrink) and fine-tunes, "
            "per seed. Reports parameters, FLOPs, SavedModel latency and "
            "accuracy against the unpruned model and three baselines "
            "(the same small architecture from scratch, uniform width "
            "scaling, magnitude pruning), and the smallest model within "
            "--max-drop points, chosen on validation and reported on a "
            "held-out test split, written as .keras and SavedModel. "
            "Without --model: an MLP and a residual CNN trained on "
            "scikit-learn's digits."))
    size.add_argument("--model", metavar="FILE",
                      help="a trained functional Keras classifier "
                           "(FILE.keras or FILE.h5); files holding code are "
                           "refused")
    size.add_argument("--data", metavar="FILE",
                      help="FILE.csv (with --target) or FILE.npz (arrays "
                           "x, y); default: digits")
    size.add_argument("--target", metavar="COLUMN",
                      help="the target column of a CSV file")
    size.add_argument("--max-drop", type=_number, default=1.0,
                      metavar="POINTS",
                      help="accuracy points the smallest model may lose "
                           "(default: 1)")
    size.add_argument("--quick", dest="preset", action="store_const",
                      const="quick", default="default",
                      help="fewer strengths and epochs, 2 seeds")
    size.add_argument("--seeds", type=_int_at_least(1), metavar="N",
                      help="runs per candidate (default: 3; 2 with --quick)")
    size.add_argument("--seed", type=_int_at_least(0), default=0,
                      metavar="S", help="first seed; also the data split's")
    size.add_argument("--out", default="size-report", metavar="DIR",
                      help="output directory (default: ./size-report)")
    size.add_argument("--verbose", action="store_true",
                      help="show TensorFlow's log lines and warnings")


@contextlib.contextmanager
def _quiet():
    """Discards what C++ libraries write to file descriptor 2 and ignores
    library warnings; Python's `sys.stderr` keeps the real terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_QUIET_MODULES)
        try:
            sys.stderr.flush()
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None  # Not a file (tests capture stderr): nothing to hide.
        if fd != 2:
            yield
            return
        original = sys.stderr
        terminal = os.fdopen(os.dup(2), "w", buffering=1,
                             encoding=original.encoding,
                             errors="backslashreplace")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = terminal
        try:
            yield
        finally:
            terminal.flush()
            os.dup2(terminal.fileno(), 2)
            sys.stderr = original
            terminal.close()


def _silence_loggers():
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _compare(args, argv):
    preset = PRESETS[args.preset]
    from tfreg.cli import UsageError
    from tfreg.cli import compare

    if not args.verbose:
        _silence_loggers()
    try:
        compare.run(
            data=args.data, target=args.target, task=args.task,
            model=args.model, regularizers=args.regularizers,
            strengths=preset["strengths"],
            seeds=args.seeds or preset["seeds"],
            epochs=args.epochs or preset["epochs"],
            train_rows=args.train_rows, seed=args.seed, out=args.out,
            argv=argv[1:])
    except UsageError as error:
        print(f"tfreg compare: error: {error}", file=sys.stderr)
        return 2
    return 0


def _size(args, argv):
    from tfreg.cli import UsageError
    from tfreg.cli import size

    if not args.verbose:
        _silence_loggers()
    try:
        size.run(model=args.model, data=args.data, target=args.target,
                 preset=args.preset,
                 seeds=args.seeds or (2 if args.preset == "quick" else 3),
                 max_drop=args.max_drop, seed=args.seed, out=args.out,
                 argv=argv[1:])
    except UsageError as error:
        print(f"tfreg size: error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv=None):
    """Runs the command line; returns the exit code (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
    except _UsageError as error:
        print(f"tfreg: error: {error}", file=sys.stderr)
        return 2
    if args.command is None:
        parser().print_help(sys.stderr)
        return 2
    job = _size if args.command == "size" else _compare
    if args.verbose:
        return job(args, argv)
    with _quiet():
        return job(args, argv)


if __name__ == "__main__":
    sys.exit(main())
