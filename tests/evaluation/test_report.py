"""scripts/report.py's table: each run's change from its seed model."""

from __future__ import annotations

import csv
import json

from lookahead.evaluation.report import write_report


def write_run(root, name, results, method=None):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "results.json").write_text(json.dumps(results))
    if method:
        (run / "config.yaml").write_text(f"method:\n  name: {method}\n  m: 6\n")
    return run


def test_changes_come_from_the_runs_own_seed_entry_or_the_reports_seed_row(tmp_path):
    seed = {"gsm8k": {"accuracy": 20.0}, "safety": {"rsr": 99.0, "jsr": 80.0}}
    write_run(tmp_path, "a-vanilla", {"gsm8k": {"accuracy": 30.0}, "safety": {"rsr": 80.0, "jsr": 40.0}, "seed": seed},
              "vanilla")  # fmt: skip
    write_run(tmp_path, "b-real", {"gsm8k": {"accuracy": 28.5}, "safety": {"rsr": 95.0, "jsr": 60.0}}, "real_prefix")
    write_run(tmp_path, "c-seed", {"gsm8k": {"accuracy": 21.0}, "safety": {"rsr": 98.0, "jsr": 70.0}})
    written = write_report([tmp_path], tmp_path / "report")
    rows = {r["run"]: r for r in csv.DictReader(written["csv"].open())}
    assert [float(rows["a-vanilla"][k]) for k in ("rsr_change", "jsr_change", "utility_change")] == [-19, -40, 10]
    # no seed entry of its own: the report's one seed row with the same utility metric
    assert [float(rows["b-real"][k]) for k in ("rsr_change", "jsr_change", "utility_change")] == [-3, -10, 7.5]
    assert rows["c-seed"]["rsr_change"] == ""
    table = written["markdown"].read_text()
    assert table.splitlines()[0].endswith("| rsr_change | jsr_change | utility_change |")
    assert "| -19.00 | -40.00 | +10.00 |" in table
