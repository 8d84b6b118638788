import json
from pathlib import Path

import pytest

from mnist_ops.errors import UserError
from mnist_ops.study import parse_spec, spec_to_toml
from mnist_ops.study_report.load import Run, first_epoch_reaching, held_target, load_study

RECORDS = [{"epoch": e, "test_accuracy": a} for e, a in enumerate([98.5, 99.1, 99.45, 99.38, 99.5, 99.41])]


def test_first_epoch_reaching_counts_from_zero_like_metrics_jsonl():
    assert first_epoch_reaching(RECORDS, 99.0) == 1
    assert first_epoch_reaching(RECORDS, 99.4) == 2
    assert first_epoch_reaching(RECORDS, 99.9) is None


def test_held_target_over_the_last_epochs():
    assert held_target(RECORDS, 99.4, last_k=2) is True
    assert held_target(RECORDS, 99.4, last_k=3) is False


def test_best_comes_from_the_same_records_as_last():
    # summary.json's best is rounded to 4 places; the report averages the stored per-epoch values for both
    run = Run(1, [{"epoch": 0, "test_accuracy": 28.115}], {"best_test_accuracy": 28.12}, Path("."))
    assert run.best_test_accuracy == run.last["test_accuracy"] == 28.115


def test_load_study_reads_finished_runs_only(tmp_path):
    spec = parse_spec({"name": "s", "seeds": 2, "variant": [{"name": "a", "preset": "seed-lean"},
                                                             {"name": "b", "preset": "seed-lean"}]}, "s.toml")
    (tmp_path / "spec.toml").write_text(spec_to_toml(spec))
    with pytest.raises(UserError, match="no finished runs yet"):
        load_study(tmp_path)
    finished = tmp_path / "a" / "seed2"
    finished.mkdir(parents=True)
    (finished / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "test_accuracy": 97.0}) + "\n")
    (finished / "done.json").write_text(json.dumps({"seed": 2, "summary": {"seconds": 1.0}}))
    (tmp_path / "a" / "seed1").mkdir()  # started, not finished
    loaded_spec, variants, info = load_study(tmp_path)
    assert loaded_spec == spec and info == {}
    assert [(v.name, [run.seed for run in v.runs]) for v in variants] == [("a", [2])]
    assert variants[0].last_test() == [97.0]
    assert variants[0].runs[0].environment == {}  # neither done.json nor environment.json says


def test_environment_and_diverged_runs(tmp_path):
    spec = parse_spec({"name": "s", "seeds": 3, "variant": [{"name": "a", "preset": "seed-lean"},
                                                             {"name": "b", "preset": "seed-lean"}]}, "s.toml")
    (tmp_path / "spec.toml").write_text(spec_to_toml(spec))
    for seed, done in [(1, {"environment": {"threads": 1}}), (2, {})]:  # seed 2: a done.json from older code
        run = tmp_path / "a" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "test_accuracy": 97.0}) + "\n")
        (run / "done.json").write_text(json.dumps({"seed": seed, "summary": {}, **done}))
        (run / "environment.json").write_text(json.dumps({"threads": 2}))
    (tmp_path / "a" / "seed2" / "diverged.json").write_text(json.dumps({"diverged": "stale"}))  # done.json wins
    for variant, seed in [("a", 3), ("b", 1)]:
        (tmp_path / variant / f"seed{seed}").mkdir(parents=True)
        (tmp_path / variant / f"seed{seed}" / "diverged.json").write_text(
            json.dumps({"seed": seed, "diverged": f"loss nan, {variant}{seed}"}))
    _, variants, _ = load_study(tmp_path)
    a, b = variants
    assert [run.environment for run in a.runs] == [{"threads": 1}, {"threads": 2}]
    assert a.diverged == {3: "loss nan, a3"} and a.seeds_finished == 3
    assert b.runs == [] and b.diverged == {1: "loss nan, b1"} and b.seeds_finished == 1


def test_a_directory_without_a_spec_is_not_a_study(tmp_path):
    with pytest.raises(UserError, match="not a study directory"):
        load_study(tmp_path)
