import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_ops.errors import UserError
from mnist_ops.fileio import read_jsonl
from mnist_ops.presets import build_config
from mnist_ops.tune import parse_tune_spec, read_tune_spec, tune_spec_to_toml


def tiny_values(**changes):
    """A search over lr and augmentation: 1 epoch on 2,000 images, scored on 300 held-out ones."""
    values = {
        "name": "tiny", "preset": "seed-lean", "trials": 6, "validation": 300,
        "base": {"epochs": 1, "limit_train": 2000, "batch_size": 64, "device": "cpu"},
        "space": {"lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
                  "augment": {"type": "categorical", "choices": ["none", "light"]}},
        "sampler": {"startup_trials": 2},
        "objective": {"last_k": 1},
    }
    values.update(changes)
    return values


def write_spec(path: Path, values: dict) -> Path:
    from mnist_ops.config import to_toml

    text = to_toml({k: v for k, v in values.items() if not isinstance(v, dict)})
    for table, keys in values.items():
        if isinstance(keys, dict) and table != "space":
            text += f"\n[{table}]\n" + to_toml(keys)
    for key, param in values.get("space", {}).items():
        text += f"\n[space.{key}]\n" + "".join(
            f"{k} = {v!r}\n".replace("'", '"').replace("True", "true") for k, v in param.items())
    path.write_text(text)
    return path


def test_spec_resolves_base_space_and_defaults(tmp_path):
    spec = parse_tune_spec(tiny_values(), "tiny.toml", trials=4)
    assert spec.trials == 4 and spec.base.validation == 300 and spec.base.limit_train == 2000
    assert (spec.sampler, spec.sampler_seed, spec.pruner, spec.last_k) == ("tpe", 0, "median", 1)
    assert [(p.name, p.kind, p.log) for p in spec.space] == [("lr", "float", True), ("augment", "categorical", False)]
    (tmp_path / "spec.toml").write_text(tune_spec_to_toml(spec))
    assert read_tune_spec(tmp_path / "spec.toml") == spec
    values = tiny_values()
    del values["validation"]
    assert parse_tune_spec(values, "tiny.toml").base.validation == 10_000


def test_a_search_on_the_last_images_confirms_on_the_test_set(tmp_path):
    """[base] validation_from = "last" holds out the last N training images for every trial; the confirm runs
    train on all of them and evaluate on the test set."""
    import optuna

    from mnist_ops.config import check_combination
    from mnist_ops.tune import best_config

    spec = parse_tune_spec(tiny_values(base={"epochs": 1, "validation_from": "last"}), "tiny.toml")
    assert (spec.base.validation, spec.base.validation_from) == (300, "last")
    (tmp_path / "spec.toml").write_text(tune_spec_to_toml(spec))
    assert read_tune_spec(tmp_path / "spec.toml") == spec
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.05, "augment": "none"}, value=99.0, distributions={
        "lr": optuna.distributions.FloatDistribution(0.01, 0.2, log=True),
        "augment": optuna.distributions.CategoricalDistribution(["none", "light"])}))
    confirm, _ = best_config(study, spec)
    assert (confirm.validation, confirm.validation_from, confirm.lr) == (0, "random", 0.05)
    check_combination(confirm)


def test_spec_takes_your_own_net(tmp_path):
    # tune searches a recipe for any net train takes: a file of yours, named path/to/nets.py:builder
    nets = tmp_path / "nets.py"
    nets.write_text("from mnist_ops.models import create_model\n"
                    "def tiny(num_classes=10):\n    return create_model('lean-2k', num_classes=num_classes)\n")
    spec = parse_tune_spec(tiny_values(base={"epochs": 1, "model": f"{nets}:tiny"}), "tiny.toml")
    assert spec.base.model == f"{nets}:tiny"


@pytest.mark.parametrize("changes, message", [
    ({"preset": "fast"}, "unknown preset 'fast'"),
    ({"space": {}}, "needs a search space"),
    ({"space": {"learning_rate": {"type": "float", "low": 0.1, "high": 0.2}}}, "'learning_rate' is not a config key"),
    ({"space": {"seed": {"type": "int", "low": 1, "high": 5}}}, "'seed' cannot be searched"),
    ({"space": {"lr": {"type": "float", "low": 0.2, "high": 0.1}}}, "needs float 'low' < 'high'"),
    ({"space": {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, r"\[space.lr\]: 'lr' must be in"),
    ({"space": {"lr": {"type": "int", "low": 1, "high": 2}}}, "'lr' is float in the config"),
    ({"space": {"augment": {"type": "categorical", "choices": ["none", "heavy"]}}}, "'augment' must be one of"),
    ({"space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}}, "'type' must be float, int or categorical"),
    ({"space": {"replicas": {"type": "int", "low": 1, "high": 2}}},
     "reaches a config that cannot train, at replicas = 2"),
    ({"sampler": {"kind": "cmaes"}}, r"\[sampler\] 'kind' must be one of tpe, random"),
    ({"sampler": {"seed": 2**32}}, r"\[sampler\]: 'seed' must be an integer in \[0, 4294967295\], got 4294967296"),
    ({"sampler": {"seed": -1}}, r"\[sampler\]: 'seed' must be an integer in \[0, 4294967295\], got -1"),
    ({"pruner": {"kind": "asha"}}, r"\[pruner\] 'kind' must be one of median, hyperband, none"),
    ({"objective": {"last_k": 3}}, "last_k = 3 is more than the epochs trained"),
    ({"objective": {"last_k": 1, "seeds": 0}}, r"\[objective\].*'seeds' must be an integer >= 1"),
    ({"objective": {"last_k": 1, "seeds": 11}}, "at most 10 seeds per trial"),
    ({"objective": {"score": "median"}}, r"\[objective\] 'score' must be one of mean, worst, got 'median'"),
    ({"base": {"validation": 10}}, "top-level 'validation'"),
    ({"base": {"model": "lean8k"}}, r"tiny.toml: unknown model 'lean8k' \(did you mean 'lean-8k'"),
    ({"base": {"model": "nets.py:Net"}}, "tiny.toml: model 'nets.py:Net': "),
    ({"trials": 0}, "'trials' .* must be an integer >= 1"),
    # Optuna would lower 'high' to the last step with a warning only: [32, 64] by 1000 searched 32 alone
    ({"space": {"batch_size": {"type": "int", "low": 32, "high": 64, "step": 1000}}},
     r"high - low = 32 is not a multiple of step 1000, and Optuna would search \[32, 32\] only"),
    ({"space": {"lr": {"type": "float", "low": 0.01, "high": 0.2, "step": 0.05}}},
     r"would search \[0.01, 0.16\] only; make high 0.16"),
    ({"budget": 3}, r"unknown key\(s\) budget"),
])
def test_bad_specs_are_refused(changes, message):
    with pytest.raises(UserError, match=message):
        parse_tune_spec(tiny_values(**changes), "tiny.toml")


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_the_largest_sampler_seed_builds_a_sampler_for_every_worker(kind):
    """numpy takes seeds up to 2**32 - 1; a worker's offset on top of the spec's seed wraps round."""
    from mnist_ops.tune import make_sampler

    spec = parse_tune_spec(tiny_values(sampler={"kind": kind, "seed": 2**32 - 1}), "tiny.toml")
    for offset in (0, 1, 1000 * 7 + 99_999):
        assert make_sampler(spec, offset, parallel=True) is not None


def run_cli(*args, env=None):
    result = subprocess.run([sys.executable, "-m", "mnist_ops", *args], capture_output=True, text=True,
                            timeout=300, env=env)
    return result.returncode, result.stdout, result.stderr


def test_a_bad_spec_fails_before_any_trial_in_one_line(tmp_path):
    spec = write_spec(tmp_path / "bad.toml", tiny_values(space={"lr": {"type": "float", "low": 0.2, "high": 0.1}}))
    code, _, stderr = run_cli("tune", "--spec", str(spec), "--out", str(tmp_path / "out"))
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "needs float 'low' < 'high'" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_trial_that_fails_in_the_users_net_ends_in_one_line_not_optunas_traceback(train_only_root, tmp_path,
                                                                                   workers):
    """Optuna logged "Trial 0 failed with parameters" and a traceback of the UserError before its one line (a
    review)."""
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n        self.head = nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n\n"
        "    def forward(self, x):\n        if self.training:\n            raise RuntimeError('boom when training')\n"
        "        return self.head(x)\n")
    values = tiny_values(trials=1, preset="seed-baseline", base={"model": f"{tmp_path / 'nets.py'}:Net", "epochs": 1,
                                                                 "limit_train": 300, "batch_size": 64, "device": "cpu"})
    spec = write_spec(tmp_path / "spec.toml", values)
    code, stdout, stderr = run_cli("tune", "--spec", str(spec), "--out", str(tmp_path / "out"), "--data-root",
                                   str(train_only_root), "--workers", workers,
                                   env={**os.environ, "MNIST_OPS_TRUSTED_MODELS": str(tmp_path / "trusted")})
    assert code == 2 and "Traceback" not in stderr + stdout and "failed with" not in stderr + stdout, stderr
    said = "raised RuntimeError: boom when training while training in epoch 0"
    if workers == "1":
        assert said in stderr.strip().splitlines()[-1]
    else:  # each worker says why it stopped (prefixed by its number); the command, that the trials did not finish
        assert said in stdout and stderr.strip().splitlines()[-1].startswith("mnist-ops: error: only 0 of 1 trials")


def test_a_study_directory_as_out_is_named_as_such(tmp_path):
    from mnist_ops.study import parse_spec, spec_to_toml
    from mnist_ops.tune import check_tune_dir

    spec = parse_tune_spec(tiny_values(), "tiny.toml")
    study = tmp_path / "study"
    study.mkdir()  # what `mnist-ops study` leaves: its spec.toml lists seeds and variants, which a tune spec has not
    (study / "spec.toml").write_text(spec_to_toml(parse_spec({"name": "s", "seeds": [1], "variant": [
        {"name": "a", "preset": "seed-lean"}]}, "s.toml")))
    with pytest.raises(UserError, match=r"holds a study's spec.toml \(a study directory\); pass another --out"):
        check_tune_dir(spec, study)


def test_a_validation_split_as_large_as_the_training_set_fails_before_any_trial(train_only_root, tmp_path):
    spec = write_spec(tmp_path / "big.toml", tiny_values(validation=60_000, trials=1))
    code, _, stderr = run_cli("tune", "--spec", str(spec), "--out", str(tmp_path / "out"),
                              "--data-root", str(train_only_root))
    assert code == 2 and stderr.strip().splitlines() == [
        "mnist-ops: error: validation = 60000 must be between 1 and 59999 (the training images); hold out fewer"]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- searches with real workers

def worker_children(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in children.read_text().split()} if children.exists() else set()


def kill_a_worker_mid_trial(url: str, study_name: str, parent: subprocess.Popen, deadline: float) -> int:
    """SIGKILL one of `parent`'s worker processes while it trains a trial; returns that trial's number."""
    import optuna
    from optuna.trial import TrialState

    from mnist_ops.distributed import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    database = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None
    while database is not None and not database.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    storage = open_storage(url)
    while time.monotonic() < deadline:
        assert parent.poll() is None, parent.communicate()
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.1)
            continue
        children = worker_children(parent.pid)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = int(trial.user_attrs.get("worker", ":0").rsplit(":", 1)[1])
            if pid in children and set(trial.params) == {"lr", "augment"} and not trial.intermediate_values:  # training
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
                now = {t.number: t.state for t in study.get_trials(deepcopy=False)}
                if now[trial.number] == TrialState.RUNNING:  # it had not ended just before the kill
                    return trial.number
        time.sleep(0.05)
    raise AssertionError("no worker was seen training a trial")


def check_search(url: str, study_name: str, trials: int, killed: int, out: Path) -> None:
    """`trials` trials ended COMPLETE or PRUNED, each once; the killed one FAILed and was re-run once."""
    import optuna
    from optuna.trial import TrialState

    from mnist_ops.distributed import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    all_trials = study.get_trials(deepcopy=False)
    by_number = {trial.number: trial for trial in all_trials}
    finished = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == trials
    assert not [t for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert by_number[killed].state == TrialState.FAIL
    retries = [t for t in all_trials if t.system_attrs.get("retry_history") == [killed]]
    assert len(retries) == 1 and retries[0] in finished
    assert retries[0].params == by_number[killed].params
    failed = [t for t in all_trials if t.state == TrialState.FAIL and t.number != killed]
    assert all(t.user_attrs.get("surplus") for t in failed)  # the only other failures: budget races, not counted
    best = build_config(None, out / "best.toml")
    assert best.validation == 0 and best.model == "seed-lean" and best.limit_train == 2000
    assert best.lr == study.best_trial.params["lr"]
    report = (out / "report.md").read_text()
    assert f"re-run after their worker died: {killed} as {retries[0].number}" in report
    assert "first 2,000 training images; each trial's " in report and " replace the base's (search space below)" \
        in report  # the base's lr is shown beside the searched one
    for plot in ("optimization_history.png", "param_importances.png", "parallel_coordinate.png",
                 "intermediate_values.png"):
        assert (out / plot).stat().st_size > 10_000


def start_tune(spec: Path, out: Path, *args: str, data_root: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mnist_ops", "tune", "--spec", str(spec), "--out", str(out),
                             "--heartbeat", "3", "--data-root", str(data_root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


@pytest.mark.integration
def test_two_commands_three_workers_on_an_empty_postgres_one_worker_killed(postgres, train_only_root, tmp_path):
    """Two commands start at once on an empty database (as two machines would): one with two local
    workers, one with one. A worker is SIGKILLed mid-trial; its trial is run again by another.
    The data root holds no test files: a trial that read the test set would fail."""
    url = postgres.create_database()
    spec = write_spec(tmp_path / "tiny.toml", tiny_values(trials=5))
    first = start_tune(spec, tmp_path / "a", "--storage", url, "--workers", "2", data_root=train_only_root)
    second = start_tune(spec, tmp_path / "b", "--storage", url, data_root=train_only_root)
    killed = kill_a_worker_mid_trial(url, "tiny", first, time.monotonic() + 120)
    outputs = finish(first) + finish(second)
    assert "was killed by signal 9" in outputs
    check_search(url, "tiny", 5, killed, tmp_path / "a")
    assert (tmp_path / "b" / "best.toml").read_text().splitlines()[3:] == \
        (tmp_path / "a" / "best.toml").read_text().splitlines()[3:]


@pytest.mark.integration
def test_embedded_storage_two_local_workers_one_killed_then_confirm(train_only_root, mnist_root, tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", tiny_values(trials=3))
    out = tmp_path / "out"
    command = start_tune(spec, out, "--workers", "2", data_root=train_only_root)
    from mnist_ops.distributed import embedded_url

    killed = kill_a_worker_mid_trial(embedded_url(out), "tiny", command, time.monotonic() + 120)
    output = finish(command)
    assert "was killed by signal 9" in output and "best: trial" in output
    assert "3 trials, 2 worker(s), no trials so far" in output  # not a Python dict
    ending = re.search(r"tune tiny: ([a-z0-9, ]+) after \d+ s", output)
    assert ending and "1 fail" in ending.group(1).split(", "), output
    check_search(embedded_url(out), "tiny", 3, killed, out)
    assert "embedded SQLite file optuna.db" in (out / "report.md").read_text()

    # Run again with the test set at hand: the search is complete, so only the confirm run trains.
    output = finish(start_tune(spec, out, "--confirm", "1", data_root=mnist_root))
    assert not re.search(r"trial \d+:", output) and "study tiny-confirm: 1 runs" in output
    done = json.loads((out / "confirm" / "best" / "seed1" / "done.json").read_text())
    assert done["config"]["validation"] == 0 and done["config"]["lr"] == build_config(None, out / "best.toml").lr
    last_test = done["summary"]["last_test_accuracy"]
    assert f"| 1 | {done['summary']['best_test_accuracy']:.2f} | {last_test:.2f} |" in (out / "report.md").read_text()
    assert "`confirm/report.md`" in (out / "report.md").read_text()  # and the link holds:
    # the spec's [base] keeps 2,000 training images: the report once said "the full training set"
    assert "best.toml trained on the first 2,000 of all training images (the spec's limit_train; no validation " \
           "split held out) and tested on the test set, 1 of 1 seeds" in (out / "report.md").read_text()
    assert "## Best variant: best (seed 1, last.pt)" in (out / "confirm" / "report.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--heartbeat", "0"], "--heartbeat must be >= 1 second"),
    (["--confirm", "-1"], "--confirm must be >= 0"),
    (["--trials", "0"], "must be an integer >= 1"),
    (["--storage", "nonsense"], "is not a database URL"),
])
def test_bad_tune_flags_are_one_line_errors(tmp_path, capsys, extra, message):
    from mnist_ops.cli import main

    spec = write_spec(tmp_path / "tiny.toml", tiny_values())
    assert main(["tune", "--spec", str(spec), "--out", str(tmp_path / "out"), *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    assert not (tmp_path / "out").exists()


def test_a_search_run_again_with_more_trials_draws_new_parameters(train_only_root, tmp_path):
    """Found on the lean-5k search: with the first run's sampler seeds, a rerun's random start-up trials
    repeated the first run's parameters one for one."""
    import optuna

    from mnist_ops.distributed import embedded_url
    from mnist_ops.tune import run_tune

    values = tiny_values(base={"epochs": 1, "limit_train": 300, "batch_size": 64, "device": "cpu"},
                         sampler={"kind": "random"}, pruner={"kind": "none"})
    for trials in (2, 4):
        run_tune(parse_tune_spec(values, "tiny.toml", trials=trials), tmp_path / "out", data_root=train_only_root,
                 log=lambda message: None)
    study = optuna.load_study(study_name="tiny", storage=embedded_url(tmp_path / "out"))
    params = [tuple(sorted(trial.params.items())) for trial in study.get_trials(deepcopy=False)]
    assert len(params) == 4 and len(set(params)) == 4, params


def test_a_search_run_again_on_another_storage_or_study_name_is_refused_before_it_starts(train_only_root, tmp_path,
                                                                                         monkeypatch):
    """A re-run that forgot --storage (or named another study) began a new search in the directory: its trial 0 met
    trials/trial0000 of the first, an Optuna traceback, then "already holds a run" (a review)."""
    import optuna

    from mnist_ops.distributed import EMBEDDED_FILE, open_storage
    from mnist_ops.tune import STORAGE_RECORD, run_tune

    values = tiny_values(base={"epochs": 1, "limit_train": 300, "batch_size": 64, "device": "cpu"},
                         sampler={"kind": "random"}, pruner={"kind": "none"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    shared = f"sqlite:///{tmp_path / 'a' / 'shared.db'}"
    out = tmp_path / "out"

    def tune(trials, **where):
        run_tune(parse_tune_spec(values, "tiny.toml", trials=trials), out, data_root=train_only_root,
                 log=lambda message: None, **where)

    tune(1, storage="sqlite:///shared.db")  # relative: the file in a/
    for where, message in [
            ({}, f"{out} holds the trials of study 'tiny' in {shared}, not of 'tiny' in its own optuna.db; run it with "
                 f"--storage on that database ({shared}) and --study-name tiny, or pass another --out"),
            ({"storage": shared, "study_name": "other"}, f"not of 'other' in {shared}")]:
        with pytest.raises(UserError, match=re.escape(message)):
            tune(2, **where)
    monkeypatch.chdir(tmp_path / "b")  # the same words name another file from here
    with pytest.raises(UserError, match=re.escape(f"not of 'tiny' in sqlite:///{tmp_path / 'b' / 'shared.db'};")):
        tune(2, storage="sqlite:///shared.db")
    assert optuna.get_all_study_names(storage=open_storage(shared)) == ["tiny"]  # no orphan study was made
    assert not (tmp_path / "b" / "shared.db").exists() and not (out / EMBEDDED_FILE).exists()
    tune(2, storage=shared)  # where it ran, by its absolute path: it goes on
    assert len(optuna.load_study(study_name="tiny", storage=open_storage(shared)).trials) == 2
    (out / STORAGE_RECORD).unlink()  # a directory from before the record
    with pytest.raises(UserError, match="holds trials, and its own optuna.db has no study 'tiny': pass the --storage"):
        tune(3)
    assert not (out / EMBEDDED_FILE).exists()  # looked up without making one
    with pytest.raises(UserError, match="storage URL 'notaurl' is not a database URL"):  # not a traceback
        tune(3, storage="notaurl")
    own = tmp_path / "own"
    run_tune(parse_tune_spec(values, "tiny.toml", trials=1), own, data_root=train_only_root, log=lambda message: None)
    run_tune(parse_tune_spec(values, "tiny.toml", trials=2), own, data_root=train_only_root, log=lambda message: None,
             storage=f"sqlite:///{own / EMBEDDED_FILE}")  # its own optuna.db, named: the same storage
    named = open_storage(f"sqlite:///{own / EMBEDDED_FILE}")
    assert len(optuna.load_study(study_name="tiny", storage=named).trials) == 2


def test_a_tune_spec_stored_before_a_config_key_existed_still_matches():
    import dataclasses

    from mnist_ops.tune import tune_spec_from_text

    spec = parse_tune_spec(tiny_values(), "tiny.toml")
    text = tune_spec_to_toml(spec)
    older = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("ema ="))
    assert older != text  # as written before Config had `ema`
    assert tune_spec_from_text(older, "tiny") == spec
    assert "seeds" not in text and "score" not in text  # an older spec reads as before [objective] had these keys
    worst = dataclasses.replace(spec, score="worst")
    assert 'score = "worst"' in tune_spec_to_toml(worst) and tune_spec_from_text(tune_spec_to_toml(worst), "tiny") == worst
    several = dataclasses.replace(spec, seeds=2)
    assert "seeds = 2" in tune_spec_to_toml(several) and tune_spec_from_text(tune_spec_to_toml(several), "tiny") != spec
    changed = tune_spec_to_toml(dataclasses.replace(spec, base=spec.base.replace(lr=0.3)))
    assert tune_spec_from_text(changed, "tiny") != spec


@pytest.mark.parametrize("score", ["mean", "worst"])
def test_a_trial_scored_over_two_seeds_trains_both_and_combines_them(train_only_root, tmp_path, monkeypatch, score):
    """One seed's luck is as large as what a search for a record ranks (docs/records.md): `[objective]
    seeds = 2` trains every trial on seeds 1 and 2 and scores the mean of their last-K means, or with
    `score = "worst"` the lowest epoch of either seed in the last K (the record rule)."""
    import optuna

    from mnist_ops.distributed import embedded_url
    from mnist_ops.tune import run_tune, tune_spec_from_text

    values = tiny_values(base={"epochs": 2, "limit_train": 300, "batch_size": 64, "device": "cpu"},
                         sampler={"kind": "random"}, pruner={"kind": "none"},
                         objective={"last_k": 2, "seeds": 2, "score": score})
    spec = parse_tune_spec(values, "tiny.toml", trials=1)
    assert spec.seeds == 2 and spec.score == score and tune_spec_from_text(tune_spec_to_toml(spec), "tiny") == spec
    reports = []
    original_report = optuna.trial.Trial.report

    def counted_report(self, value, step):
        reports.append(step)
        return original_report(self, value, step)

    monkeypatch.setattr(optuna.trial.Trial, "report", counted_report)
    run_tune(spec, tmp_path / "out", data_root=train_only_root, log=lambda message: None)
    trial = optuna.load_study(study_name="tiny", storage=embedded_url(tmp_path / "out")).trials[0]
    finals = {}
    for seed in (1, 2):
        run = tmp_path / "out" / "trials" / "trial0000" / f"seed{seed}"
        assert f"seed = {seed}" in (run / "config.toml").read_text()
        accuracies = [record["val_accuracy"] for record in read_jsonl(run / "metrics.jsonl")]
        assert len(accuracies) == 2
        finals[str(seed)] = min(accuracies) if score == "worst" else sum(accuracies) / 2
    assert trial.user_attrs["seed_values"] == pytest.approx(finals)
    expected = min(finals.values()) if score == "worst" else (finals["1"] + finals["2"]) / 2
    assert trial.value == pytest.approx(expected)
    words = {"mean": "mean", "worst": "lowest"}[score]
    assert (tmp_path / "out" / "best.toml").read_text().startswith(
        f"# Best trial 0: {expected:.4f}% {words} validation accuracy\n")
    assert trial.user_attrs["epochs_trained"] == 4
    assert reports == [0, 1]  # each epoch of the first seed, for the pruner; the second seed reports none
    from mnist_ops.tune_report import write_tune_report

    report = write_tune_report(tmp_path / "out", spec, None, None, "mnist-ops tune --spec tiny.toml").read_text()
    assert ("averaged over seeds 1-2" if score == "mean" else "the lowest validation accuracy in the last 2 epochs "
            "(the record rule), the worst over seeds 1-2") in report
    assert f"seed 2: {finals['2']:.2f}" in report
    assert "; pruner: none" in report and "start-up trials" not in report  # a random sampler has none
    listed = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert listed[0]["seed_values"] == pytest.approx(finals)


def test_a_teacher_that_saw_the_validation_images_fails_before_any_trial(train_only_root, tmp_path, digit_checkpoint):
    from mnist_ops.errors import UserError
    from mnist_ops.tune import run_tune

    values = tiny_values(base={"epochs": 1, "limit_train": 2000, "batch_size": 64, "device": "cpu",
                               "teacher": str(digit_checkpoint), "distill_weight": 0.5})
    with pytest.raises(UserError, match="held out no training images, this run validates on 300"):
        run_tune(parse_tune_spec(values, "tiny.toml"), tmp_path / "out", data_root=train_only_root,
                 log=lambda message: None)
    assert not (tmp_path / "out").exists()


def test_a_trial_stopped_by_ctrl_c_runs_again_with_its_parameters_and_no_traceback(train_only_root, tmp_path,
                                                                                     monkeypatch, capfd):
    """Ctrl+C or SIGTERM during a trial: Optuna marked it failed and printed a 40-line traceback, and the resumed
    search drew new parameters in its place, so a polite stop lost what a kill (heartbeat) did not."""
    import optuna
    from optuna.trial import TrialState

    import mnist_ops.train
    from mnist_ops.distributed import embedded_url
    from mnist_ops.tune import run_tune

    values = tiny_values(base={"epochs": 1, "limit_train": 300, "batch_size": 64, "device": "cpu"},
                         sampler={"kind": "random"}, pruner={"kind": "none"})
    spec = parse_tune_spec(values, "tiny.toml", trials=2)
    real_fit = mnist_ops.train.fit

    def stopped_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_ops.train, "fit", stopped_fit)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, tmp_path / "out", data_root=train_only_root, log=lambda message: None)
    assert capfd.readouterr().err == ""
    from mnist_ops.tune_report import _state_line

    stopped = optuna.load_study(study_name="tiny", storage=embedded_url(tmp_path / "out")).get_trials(deepcopy=False)
    assert _state_line(stopped) == ("Trials: 0 complete, 0 pruned, 1 failed, 0 running, 1 queued; re-run after Ctrl+C "
                                    "or SIGTERM stopped them: 0 as 1 (queued)")  # not yet run again (a review)
    monkeypatch.setattr(mnist_ops.train, "fit", real_fit)
    run_tune(spec, tmp_path / "out", data_root=train_only_root, log=lambda message: None)
    trials = optuna.load_study(study_name="tiny", storage=embedded_url(tmp_path / "out")).get_trials(deepcopy=False)
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and trials[2].params != trials[0].params
    assert _state_line(trials).endswith("; re-run after Ctrl+C or SIGTERM stopped them: 0 as 1")  # not a dead worker


@pytest.mark.parametrize("changes, message", [
    ({"base": {"epochs": 1, "limit_train": 300, "model": "seed-lean-plain", "precise_bn": 100}},
     "at lr = 0.01, augment = none: precise_bn = 100 recomputes BatchNorm statistics, and model seed-lean-plain has "
     "no BatchNorm"),
    ({"space": {"train_crop": {"type": "int", "low": 0, "high": 20}}},
     "at train_crop = 20: model seed-lean takes no crop smaller than the images"),
])
def test_a_space_that_reaches_a_model_that_cannot_train_fails_before_anything_is_written(train_only_root, tmp_path,
                                                                                       changes, message, capfd):
    """It failed the first trial instead, with Optuna's traceback, and left an optuna.db and a spec.toml."""
    from mnist_ops.tune import run_tune

    spec = parse_tune_spec(tiny_values(**changes), "tiny.toml")
    with pytest.raises(UserError, match="^tune spec 'tiny': the search space reaches a config that cannot train, "
                                        + re.escape(message)):
        run_tune(spec, tmp_path / "out", data_root=train_only_root, log=lambda message: None)
    assert not (tmp_path / "out").exists() and capfd.readouterr().err == ""


def test_a_confirm_of_an_earlier_best_is_not_reported_as_the_new_ones(tmp_path):
    """The search went on after --confirm and found a better trial: the report showed the old recipe's test runs
    as best.toml's, and --confirm again was refused with a fix that could not be followed."""
    from mnist_ops.config import to_toml
    from mnist_ops.study import spec_to_toml
    from mnist_ops.tune import BEST_CONFIG, confirm_spec, stale_confirm
    from mnist_ops.tune_report import confirm_blocks

    spec = parse_tune_spec(tiny_values(), "tiny.toml")
    best = spec.base.replace(lr=0.05, validation=0)
    (tmp_path / BEST_CONFIG).write_text(to_toml(best.to_dict()))
    assert stale_confirm(tmp_path, spec) is None  # nothing confirmed yet
    (tmp_path / "confirm").mkdir()
    (tmp_path / "confirm" / "spec.toml").write_text(spec_to_toml(confirm_spec(tmp_path, spec, 2)))
    assert stale_confirm(tmp_path, spec) is None
    (tmp_path / BEST_CONFIG).write_text(to_toml(best.replace(lr=0.06).to_dict()))  # a later trial won
    assert stale_confirm(tmp_path, spec) == "lr 0.05 -> 0.06"
    [(kind, text)] = confirm_blocks(tmp_path, spec)
    assert kind == "paragraph" and text.startswith("Not confirmed: `confirm/` holds the test runs of an earlier best, "
                                                   "whose recipe differs from best.toml's (lr 0.05 -> 0.06)")


def test_best_toml_says_how_to_train_it_from_where_tune_ran(tmp_path, monkeypatch):
    """Its 'train it' line named best.toml alone, which is not found from where `tune --out out/t` ran (an audit)."""
    from types import SimpleNamespace

    from mnist_ops.config import Config
    from mnist_ops.tune import write_best_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "t").mkdir(parents=True)
    path = Path("out/t/best.toml")
    write_best_config(path, Config(), SimpleNamespace(number=3, value=99.1), "mnist-ops tune --out out/t")
    line = next(line for line in path.read_text().splitlines() if "train it" in line)
    command = line.split("train it: ", 1)[1].split()
    assert command[:3] == ["mnist-ops", "train", "--config"] and Path(command[3]).is_file()


def test_a_tune_directory_written_before_a_config_key_existed_reads_as_it_ran(tmp_path):
    """A tune directory's spec.toml written before `rotation_fill` existed filled with the mean, whatever its preset
    draws today (seed-lean: black): running the spec pinned to the mean on it goes on, today's preset is refused."""
    from mnist_ops.tune import check_tune_dir, read_recorded_tune_spec

    def spec(**base):
        values = tiny_values()
        values["base"] = {**values["base"], **base}
        return parse_tune_spec(values, "tiny.toml")

    out = tmp_path / "out"
    out.mkdir()
    text = tune_spec_to_toml(spec(rotation_fill="mean"))
    assert 'rotation_fill = "mean"' in text and spec().base.rotation_fill == "zero"
    (out / "spec.toml").write_text(text.replace('rotation_fill = "mean"\n', ""))  # as older code wrote it
    assert read_recorded_tune_spec(out / "spec.toml").base.rotation_fill == "mean"
    check_tune_dir(spec(rotation_fill="mean"), out)
    with pytest.raises(UserError, match="written by a different tune spec"):
        check_tune_dir(spec(), out)
