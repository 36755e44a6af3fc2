"""tools/bench/: every case at tiny scale, the targets and the document it
writes (BENCHMARKS.md). No timing assertions: only the bookkeeping."""

import contextlib
import gc
import io
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tools.bench import cli
from tools.bench import harness
from tools.bench import workloads
from tools.bench import writer
from tools.bench.cases import adam_sparsity
from tools.bench.cases import CASES
from tools.bench.cases import first_step
from tools.bench.cases import memory
from tools.bench.cases import penalty
from tools.bench.cases import train_step


def _targets_of(results):
    return [harness.Target(**t) for t in results["targets"]]


def _full_shaped(results):
    """The tiny run's results with the rows a full run has (sizes, models,
    depths), to measure the document's length at full scale."""
    cases = results["cases"]
    penalty_rows = [dict(row, params=params) for params in
                    (4_000_000, 16_000_000, 64_000_000)
                    for row in cases["penalty"]]
    template = cases["train_step"][0]
    train_step_rows = [
        dict(template, model=model, regularizer=regularizer, jit=jit)
        for model in workloads.MODELS for regularizer in ("L2", "L1L2")
        for jit in (False, True)]
    first_step_rows = [dict(row, depth=depth) for depth in (16, 32, 64, 128)
                       for row in cases["first_step"]]
    sparsity, shrink = (harness.find(cases["outcomes"], kind=kind)
                        for kind in ("sparsity", "shrink"))
    outcomes = ([dict(sparsity[-1], run=f"run {index}") for index in range(7)]
                + [dict(shrink[0], chosen=index == 0) for index in range(3)])
    memory_rows = [dict(cases["memory"][0], contender=name)
                   for name in memory.memory_contenders(2)]
    digits, cnn = (harness.find(cases["adam_sparsity"], kind=kind)
                   for kind in ("digits", "cnn"))
    adam_sparsity_rows = [
        dict(digits[0], optimizer=name, strength=strength)
        for name in adam_sparsity.SPARSITY_OPTIMIZERS
        for strength in (None,) + adam_sparsity.SPARSITY_STRENGTHS] + [
            dict(cnn[0], strength=strength)
            for strength in adam_sparsity.CNN_ADAM_STRENGTHS]
    full = dict(results, cases=dict(cases, penalty=penalty_rows,
                                    train_step=train_step_rows,
                                    first_step=first_step_rows,
                                    outcomes=outcomes, memory=memory_rows,
                                    adam_sparsity=adam_sparsity_rows))
    settings = harness.Settings("full")
    full["targets"] = []
    for case in CASES:
        full["targets"] += [
            dict(vars(target), case=case.name)
            for target in case.targets(full["cases"][case.name], settings)]
    return full


class BenchTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        names = [case.name for case in CASES]
        with contextlib.redirect_stdout(io.StringIO()):
            cls.results = harness.run(CASES, harness.Settings("tiny"), names,
                                      "python tools/bench.py --tiny")
        cls.text = writer.document(cls.results, CASES)
        cls.lines = cls.text.splitlines()

    def test_interleave_rotates_the_order_every_round(self):
        calls = []
        contenders = {name: (lambda name=name: calls.append(name))
                      for name in "abc"}
        times = harness.interleave(contenders, rounds=3, warmup=1, repeat=2)
        self.assertEqual("".join(calls), "abc" + "aabbcc" + "bbccaa" + "ccaabb")
        self.assertEqual({name: len(t) for name, t in times.items()},
                         {"a": 3, "b": 3, "c": 3})

    def test_rounds_within_a_budget_are_bounded_both_ways(self):
        instant = {"a": lambda: None, "b": lambda: None}
        self.assertEqual(harness.rounds_within(instant, 5, 1, seconds=60.0),
                         1000)
        self.assertEqual(harness.rounds_within(instant, 5, 1, seconds=0.0), 5)

    def test_the_run_leaves_nothing_frozen(self):
        # The run freezes the imports' objects only while its cases run.
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_settings_pick_by_scale_and_rounds_override(self):
        self.assertEqual(harness.Settings("full").pick(1, 2, 3), 1)
        self.assertEqual(harness.Settings("quick").pick(1), 1)
        self.assertEqual(harness.Settings("tiny").pick(1, 2), 2)
        self.assertEqual(harness.Settings("quick").rounds(7, 3), 3)
        self.assertEqual(harness.Settings("tiny", 11).rounds(7, 3), 11)

    def test_every_case_ran_and_has_its_table(self):
        for case in CASES:
            rows = self.results["cases"][case.name]
            self.assertNotEmpty(rows, case.name)
            self.assertIn(f"### {case.title}", self.lines)
            self.assertIn(case.table(rows), self.text)
        headings = [line for line in self.lines if line.startswith("## ")]
        self.assertEqual(headings[:3],
                         ["## How to run", "## Machine", "## Targets"])
        self.assertEqual(headings[-1], "## Results")

    def test_penalty_table_has_one_row_per_contender(self):
        rows = self.results["cases"]["penalty"]
        names = {r["contender"] for r in rows} - {"read floor"}
        table = penalty.table_penalty(rows).splitlines()
        self.assertLen([line for line in table if line.startswith("| 20K |")],
                       len(names))
        header = next(line for line in table if line.startswith("| params"))
        self.assertIn("| graph value | graph value+grad | XLA value | "
                      "XLA value+grad |", header)

    def test_every_target_is_one_cell_with_its_verdict(self):
        targets = _targets_of(self.results)
        self.assertNotEmpty(targets)
        self.assertEqual({t.case for t in targets},
                         {case.name for case in CASES})
        met = sum(t.met for t in targets)
        self.assertIn(f"{met} of {len(targets)} measurements meet their "
                      "target.", self.text)
        for target in targets:
            self.assertIn(writer.verdict(target), self.text)
            self.assertEqual(writer.verdict(target).startswith("**"),
                             not target.met)

    def test_each_unmet_goal_is_listed_with_its_limits_once(self):
        targets = _targets_of(self.results)
        unmet_goals = {t.goal for t in targets if not t.met}
        if not unmet_goals:
            self.assertNotIn("## What limits the unmet targets", self.lines)
            return
        section = self.text.split("## What limits the unmet targets")[1]
        section = section.split("## Results")[0]
        for goal in unmet_goals:
            self.assertIn(goal, section)
            for limit in writer.limits_of(goal, CASES):
                self.assertEqual(section.count(f"- **{limit.title}.** "), 1)

    def test_a_full_run_document_stays_under_300_lines(self):
        full = _full_shaped(self.results)
        self.assertLen(full["cases"]["train_step"], 12)
        # The longest document: every target unmet, so every limit printed.
        full["targets"] = [dict(target, met=False)
                           for target in full["targets"]]
        # 250 before the memory case, which adds 17 lines (its targets,
        # limit and one row per mode), and the accuracy case, which adds 22
        # (its targets and one row per contender), and the adam_sparsity
        # case, which adds 38 (its targets, a row per optimizer, its CNN),
        # the size case (its targets and table) and the multi-run command
        # of How to run, which add 21, and the optimizer case's interval
        # targets, which add 2.
        self.assertLess(len(writer.document(full, CASES).splitlines()), 365)

    def test_memory_targets_take_the_worst_class_of_each_bound(self):
        row = {"elements": 1 << 24, "eager tape": 1.0, "eager value": 0.5,
               "tf.function": 1.0, "jit": 1.0}
        rows = [dict(row, contender="L2", bound=6.0),
                dict(row, contender="Horseshoe", bound=6.0, jit=7.0),
                dict(row, contender="MeanFieldKL", bound=9.0,
                     **{"eager tape": 8.5})]
        goal = "peak extra memory <= its bound x the weight's bytes"
        self.assertEqual(
            [(t.goal, t.subject, t.condition, t.measured, t.met)
             for t in memory.targets_memory(rows, harness.Settings())],
            [(f"{goal} (6)", "worst: Horseshoe", "17M", 7.0, False),
             (f"{goal} (9)", "worst: MeanFieldKL", "17M", 8.5, True)])
        self.assertIn("| jit | 1 | 7 | 1 |",
                      memory.table_memory(rows).splitlines())
        self.assertEqual(writer.limits_of(f"{goal} (6)", CASES),
                         (memory.MEMORY_LIMITS,))

    def test_train_step_targets_use_each_models_bound(self):
        row = self.results["cases"]["train_step"][0]
        rows = [dict(row, model="mlp", regularizer="L2", jit=True,
                     overhead_ratio=0.79),
                dict(row, model="deep128", regularizer="L1L2", jit=False,
                     overhead_ratio=0.61),
                dict(row, model="cnn", regularizer="L2", jit=True,
                     overhead_ratio=0.1)]
        self.assertEqual(
            [(t.goal, t.measured, t.met)
             for t in train_step.targets_train_step(rows, harness.Settings())],
            [("train-step overhead, MLP, jit: tfreg L2 <= 0.8x Keras'", 0.79,
              True),
             ("train-step overhead, 128-layer stack, no jit: tfreg L1L2 <= "
              "0.6x Keras'", 0.61, False)])

    def test_first_step_target_is_set_at_the_deepest_stack(self):
        def row(depth, contender, ratios):
            return {"depth": depth, "contender": contender, "median_s": 2.0,
                    "vs_none": sorted(ratios)[1], "rounds_s": [2.0] * 3,
                    "rounds_vs_none": ratios}
        rows = [row(16, "none", [1.0] * 3),
                row(16, "tfreg StudentT", [1.7, 1.9, 1.8]),
                row(128, "none", [1.0] * 3),
                row(128, "tfreg StudentT", [1.25, 1.6, 1.375])]
        self.assertEqual(
            [(t.goal, t.measured, t.met)
             for t in first_step.targets_first_step(rows, harness.Settings())],
            [("first jit step, 128-layer stack: <= 1.5x no regularizer",
              1.375, True)])
        self.assertIn("| 128 | tfreg StudentT | 2 | 1.38 | 1.25 1.60 1.38 |",
                      first_step.table_first_step(rows).splitlines())

    def test_quick_run_time_is_a_target_only_for_a_whole_quick_run(self):
        names = [case.name for case in CASES]
        meta = {"scale": "quick", "cases": names, "seconds": 200.0}
        (target,) = harness.run_targets(meta, CASES)
        self.assertEqual((target.measured, target.met, target.case),
                         (200.0, False, "run"))
        self.assertEqual(writer.limits_of(target.goal, CASES),
                         harness.RUN_LIMITS[harness.QUICK_GOAL])
        self.assertEmpty(harness.run_targets(dict(meta, cases=names[:1]),
                                             CASES))
        self.assertEmpty(harness.run_targets(dict(meta, scale="full"), CASES))

    def test_a_new_case_gets_its_table_targets_and_limits(self):
        limit = harness.Limit("Test limit", "Why the widget is slow.")
        case = harness.Case(
            name="widget", title="Widget", about="times a widget.",
            run=lambda settings: [{"widget": settings.pick(1, 2, 3),
                                   "ratio": 1.5}],
            table=lambda rows: writer.table(rows, (("widget", "widget"),
                                                  ("ratio", "ratio"))),
            targets=lambda rows, settings: [
                harness.Target("widget ratio <= 1.2", "widget", "small",
                             rows[0]["ratio"], rows[0]["ratio"] <= 1.2)],
            limits={"widget ratio": (limit,)})
        results = harness.run([case], harness.Settings("tiny"), ["widget"],
                              "cmd")
        text = writer.document(results, [case])
        self.assertEqual(results["cases"]["widget"], [{"widget": 3,
                                                       "ratio": 1.5}])
        self.assertIn("`widget`: times a widget.", text)
        self.assertIn("| widget ratio <= 1.2 | widget | **1.5 ✗** |", text)
        self.assertIn("- **Test limit.** Why the widget is slow. (widget "
                      "ratio <= 1.2)", text)
        self.assertIn("### Widget\n\n| widget | ratio |\n|---|---|\n| 3 | 1.5 |",
                      text)

    def test_main_writes_the_document_of_its_json(self):
        with tempfile.TemporaryDirectory() as directory:
            document = os.path.join(directory, "BENCHMARKS.md")
            results = os.path.join(directory, "bench.json")
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                cli.main(["--tiny", "--cases", "first_step", "--write",
                            document, "--json", results])
            with open(document) as f:
                written = f.read()
            with open(results) as f:
                self.assertEqual(writer.document(json.load(f), CASES), written)
        self.assertIn(written, printed.getvalue())
        with tempfile.TemporaryDirectory() as directory:
            saved = os.path.join(directory, "bench.json")
            again = os.path.join(directory, "again.md")
            with open(saved, "w") as f:
                json.dump(self.results, f)
            with contextlib.redirect_stdout(io.StringIO()):
                cli.main(["--from-json", saved, "--write", again])
            with open(again) as f:
                self.assertEqual(f.read(), self.text)
        self.assertIn("Generated by `python tools/bench.py --tiny --cases "
                      "first_step --write ", written)
        self.assertNotIn("### Train step", written)

    def _one_run(self, names, command, commit, change=None):
        """The tiny run as if it had run only the cases `names`; `change`
        maps a case to a function of its rows."""
        change = change or {}
        cases = {name: [change.get(name, dict)(row)
                        for row in self.results["cases"][name]]
                 for name in names}
        settings = harness.Settings("tiny")
        targets = [dict(vars(target), case=case.name) for case in CASES
                   if case.name in names
                   for target in case.targets(cases[case.name], settings)]
        return dict(self.results, cases=cases, targets=targets,
                    case_seconds={name: 1.0 for name in names},
                    machine=dict(self.results["machine"], command=command,
                                 commit=commit, cases=names))

    def test_several_runs_make_one_document_each_case_from_one_run(self):
        first = self._one_run(["penalty", "first_step"], "cmd one", "aaa111")
        # The second run's first_step rows differ: a later file wins.
        second = self._one_run(
            ["first_step", "accuracy"], "cmd two", "bbb222",
            {"first_step": lambda row: dict(row, median_s=1234.5)})
        with tempfile.TemporaryDirectory() as directory:
            paths = []
            for index, run in enumerate((first, second)):
                paths.append(os.path.join(directory, f"run{index}.json"))
                with open(paths[-1], "w") as f:
                    json.dump(run, f)
            written = os.path.join(directory, "merged.md")
            with contextlib.redirect_stdout(io.StringIO()):
                cli.main(["--from-json", paths[0], "--from-json", paths[1],
                          "--write", written])
            with open(written) as f:
                text = f.read()
        machine = text.split("## Machine")[1].split("## Targets")[0]
        self.assertIn("Run 1: `cmd one` on ", machine)
        self.assertIn("at commit aaa111; in this document: penalty.",
                      machine)
        self.assertIn("at commit bbb222; in this document: first_step, "
                      "accuracy.", machine)
        self.assertEqual(machine.count("- load average"), 2)
        self.assertIn("Generated from 2 runs (under Machine)", text)
        titles = {case.name: case.title for case in CASES}
        for name, run, source in (("penalty", 1, first),
                                  ("first_step", 2, second),
                                  ("accuracy", 2, second)):
            case = next(case for case in CASES if case.name == name)
            self.assertIn(f"### {titles[name]}\n\nFrom run {run}.\n\n"
                          + case.table(source["cases"][name]), text)
        self.assertNotIn(first_step.table_first_step(
            first["cases"]["first_step"]), text)
        self.assertNotIn("### Train step", text)
        merged = writer.merged([first, second])
        expected = [t for t in first["targets"] if t["case"] == "penalty"] + [
            t for t in second["targets"]]
        self.assertEqual(merged["targets"], expected)
        self.assertIn(f"{sum(t['met'] for t in expected)} of {len(expected)} "
                      "measurements meet their target.", text)

    def test_the_script_and_the_module_write_the_same_document(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(cli.__file__))))
        with tempfile.TemporaryDirectory() as directory:
            saved = os.path.join(directory, "bench.json")
            with open(saved, "w") as f:
                json.dump(self.results, f)
            for command in ([os.path.join(root, "tools", "bench.py")],
                            ["-m", "tools.bench"]):
                written = os.path.join(directory, "written.md")
                subprocess.run([sys.executable, *command, "--from-json",
                                saved, "--write", written], cwd=root,
                               check=True, capture_output=True)
                with open(written) as f:
                    self.assertEqual(f.read(), self.text, command)

    def test_bad_arguments_are_rejected(self):
        for argv in (["--rounds", "0"], ["--cases", "penalty,nope"],
                     ["--quick", "--tiny"]):
            with self.subTest(argv=argv), \
                    contextlib.redirect_stderr(io.StringIO()), \
                    self.assertRaises(SystemExit):
                cli.main(argv)


if __name__ == "__main__":
    absltest.main()
