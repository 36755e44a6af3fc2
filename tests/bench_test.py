"""tools/bench.py's bookkeeping: order, rounds, targets, tables (no timing)."""

from absl.testing import absltest

from tools import bench


def _train_step_row(model, regularizer, jit, overhead_ratio, penalty_ratio):
    return {
        "model": model, "regularizer": regularizer, "jit": jit,
        "params": 1000, "rounds": 40, "none_ms": 10.0, "keras_ms": 12.0,
        "tfreg_ms": 11.0, "keras_overhead_ms": 2.0,
        "tfreg_overhead_ms": 2.0 * overhead_ratio,
        "overhead_ratio": overhead_ratio, "control_overhead_ms": -0.125,
        "tfreg_vs_keras_step": 0.9, "keras_penalty_ms": 1.0,
        "tfreg_penalty_ms": penalty_ratio, "penalty_ratio": penalty_ratio,
        "page_faults": {"none": 0, "keras": 7, "tfreg": 0},
    }


def _results(rows):
    return {
        "case_seconds": {"train_step": 12.0},
        "train_step": rows,
        "machine": {
            "command": "python tools/bench.py --cases train_step",
            "cpu": "test CPU", "cores": 2, "platform": "test", "python": "3",
            "tensorflow": "2", "keras": "3", "legacy": False,
            "cpu_allocator_use_bfc": "unset", "load_before": [0, 0, 0],
            "load_after": [0, 0, 0], "seconds": 12.0, "max_rss_gb": 1.0,
        },
    }


class BenchTest(absltest.TestCase):

    def test_interleave_rotates_the_order_every_round(self):
        calls = []
        contenders = {name: (lambda name=name: calls.append(name))
                      for name in "abc"}
        times = bench.interleave(contenders, rounds=3, warmup=1, repeat=2)
        self.assertEqual(
            "".join(calls),
            "abc" + "aabbcc" + "bbccaa" + "ccaabb")
        self.assertEqual({name: len(t) for name, t in times.items()},
                         {"a": 3, "b": 3, "c": 3})

    def test_rounds_within_a_budget_are_bounded_both_ways(self):
        instant = {"a": lambda: None, "b": lambda: None}
        self.assertEqual(bench._rounds_within(instant, 5, 1, seconds=60.0),
                         1000)
        self.assertEqual(bench._rounds_within(instant, 5, 1, seconds=0.0), 5)

    def test_train_step_targets_use_each_models_bound(self):
        results = _results([
            _train_step_row("mlp", "L2", True, 0.79, 0.81),
            _train_step_row("deep128", "L1L2", False, 0.61, 0.59),
        ])
        met = {target["target"]: target["met"]
               for target in bench.targets(results)}
        self.assertEqual(met, {
            "mlp jit=True tfreg L2 overhead <= 0.8x Keras' overhead": True,
            "mlp jit=True tfreg L2 penalty alone (model's kernel shapes) "
            "<= 0.8x Keras'": False,
            "deep128 jit=False tfreg L1L2 overhead <= 0.6x Keras' "
            "overhead": False,
            "deep128 jit=False tfreg L1L2 penalty alone (model's kernel "
            "shapes) <= 0.6x Keras'": True,
        })

    def test_markdown_shows_the_control_beside_the_overheads(self):
        results = _results([_train_step_row("deep128", "L1L2", False,
                                            0.5, 0.75)])
        results["targets"] = bench.targets(results)
        lines = bench.markdown(results).splitlines()
        header = next(line for line in lines
                      if line.startswith("| model |"))
        row = next(line for line in lines if line.startswith("| deep128 |"))
        columns = [cell.strip() for cell in header.strip("|").split("|")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        self.assertEqual(len(columns), len(cells))
        by_column = dict(zip(columns, cells))
        self.assertEqual(by_column["control overhead"], "-0.125")
        self.assertEqual(by_column["overhead ratio"], "0.5")
        self.assertEqual(by_column["page faults/step none/Keras/tfreg"],
                         "0/7/0")

    def test_first_step_reports_every_rounds_ratio_and_the_deepest_target(self):
        def row(depth, contender, ratios):
            return {"depth": depth, "jit": True, "contender": contender,
                    "median_s": 2.0, "vs_none": sorted(ratios)[1],
                    "rounds_s": [2.0] * 3, "rounds_vs_none": ratios}
        results = _results([])
        results["first_step"] = [
            row(16, "none", [1.0, 1.0, 1.0]),
            row(16, "tfreg StudentT", [1.7, 1.9, 1.8]),
            row(128, "none", [1.0, 1.0, 1.0]),
            row(128, "tfreg StudentT", [1.25, 1.6, 1.375]),
        ]
        targets = bench.targets(results)
        self.assertEqual(
            [(t["target"], t["measured"], t["met"]) for t in targets],
            [("first step, depth 128, jit: tfreg StudentT <= 1.5x none",
              1.375, True)])
        results["targets"] = targets
        self.assertIn("| 128 | tfreg StudentT | 2 | 1.38 | 1.25 1.60 1.38 |",
                      bench.markdown(results).splitlines())


if __name__ == "__main__":
    absltest.main()
