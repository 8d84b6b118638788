import json
import re
from pathlib import Path

import pytest

from mnist_ops.errors import UserError
from mnist_ops.study import parse_spec, spec_to_toml
from mnist_ops.study_report.load import Run, first_epoch_reaching, held_target, load_study

def epoch(number: int, test_accuracy: float) -> dict:
    """One line of metrics.jsonl with every number the report reads."""
    return {"epoch": number, "train_loss": 0.2, "train_accuracy": 95.0, "test_loss": 0.1, "test_accuracy": test_accuracy}


SUMMARY = {"seconds": 1.0, "parameters": 7_000}
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
    (finished / "metrics.jsonl").write_text(json.dumps(epoch(0, 97.0)) + "\n")
    (finished / "done.json").write_text(json.dumps({"seed": 2, "summary": SUMMARY}))
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
        (run / "metrics.jsonl").write_text(json.dumps(epoch(0, 97.0)) + "\n")
        (run / "done.json").write_text(json.dumps({"seed": seed, "summary": SUMMARY, **done}))
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


def write_finished_study(directory):
    """spec.toml, study.json and one finished run a/seed1 of two epochs, as a study writes them."""
    spec = parse_spec({"name": "s", "seeds": 1, "variant": [{"name": "a", "preset": "seed-lean"}]}, "s.toml")
    (directory / "spec.toml").write_text(spec_to_toml(spec))
    (directory / "study.json").write_text(json.dumps({"command": "mnist-ops study", "invocations": []}))
    run = directory / "a" / "seed1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(epoch(number, 97.0 + number)) + "\n"
                                               for number in range(2)))
    (run / "done.json").write_text(json.dumps({"seed": 1, "summary": SUMMARY}))
    return run


REBUILD = "run the study again: it rewrites the run's files from its last.pt, or trains the run again"


@pytest.mark.parametrize("file, content, problem, fix", [
    ("a/seed1/done.json", '{"x":', r"not JSON: Expecting value: line 1 column 6 \(char 5\)", f"delete it and {REBUILD}"),
    ("a/seed1/done.json", "[1, 2]", "a JSON list, not an object", f"delete it and {REBUILD}"),
    ("a/seed1/done.json", '{"seed": 1}', "no 'summary'", f"delete it and {REBUILD}"),
    ("a/seed1/done.json", b"\xff\xfe{", "not JSON: 'utf-8' codec can't decode", f"delete it and {REBUILD}"),
    ("a/seed1/metrics.jsonl", "", "it holds no epoch", f"delete {{run}}/done.json and {REBUILD}"),
    ("a/seed1/metrics.jsonl", '{"epoch": 0, "test_accuracy": 97.0}\n{"epo', "line 2 is not a JSON object: '{\"epo'",
     f"delete {{run}}/done.json and {REBUILD}"),
    ("a/seed1/metrics.jsonl", '[1, 2]\n', r"line 1 is not a JSON object: '\[1, 2\]'",
     f"delete {{run}}/done.json and {REBUILD}"),
    ("study.json", '{"invocations": [', "not JSON: ", "delete it; the report then leaves out the command, machine and "
                                                       "wall time it recorded"),
    # each once a KeyError or a TypeError, and a traceback (audit)
    ("a/seed1/metrics.jsonl", '{"epoch": 0}\n', "line 1 has no number for train_loss, train_accuracy, test_loss, "
     "test_accuracy", f"delete {{run}}/done.json and {REBUILD}"),
    ("a/seed1/metrics.jsonl", json.dumps(epoch(0, "high")) + "\n", "line 1 has no number for test_accuracy",
     f"delete {{run}}/done.json and {REBUILD}"),
    ("a/seed1/done.json", '{"seed": 1, "summary": {}}', "its summary lacks the run's seconds or parameter count",
     f"delete it and {REBUILD}"),
    ("study.json", '{"invocations": [{"x": 1}]}', "'invocations' is not a list of invocations with their seconds",
     "delete it; the report then leaves out the command, machine and wall time it recorded"),
])
def test_a_damaged_study_file_is_named_with_the_fix(tmp_path, file, content, problem, fix):
    run = write_finished_study(tmp_path)
    damaged = tmp_path / file
    damaged.write_bytes(content if isinstance(content, bytes) else content.encode())
    pattern = re.escape(f"{damaged} is damaged (") + problem + ".*" + re.escape("); " + fix.format(run=run)) + "$"
    with pytest.raises(UserError, match=pattern) as raised:
        load_study(tmp_path)
    assert "\n" not in str(raised.value)


def test_a_damaged_diverged_record_is_named_with_the_fix(tmp_path):
    run = write_finished_study(tmp_path)
    (run / "done.json").unlink()
    (run / "diverged.json").write_text('{"diverged": "loss na')
    with pytest.raises(UserError, match=re.escape(f"{run / 'diverged.json'} is damaged (not JSON: ") + ".*"
                                        + re.escape("); delete it and run the study again: it rewrites")):
        load_study(tmp_path)
