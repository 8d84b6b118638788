import json
import os
import subprocess
import sys

import pytest

from mnist_ops.errors import UserError
from mnist_ops.fileio import read_jsonl
from mnist_ops.study_storage import export_study, parse_label, run_label


def test_run_labels_round_trip():
    assert parse_label(run_label("+batchnorm+dropout", 12)) == ("+batchnorm+dropout", 12)
    assert parse_label(run_label("a/seedy", 3)) == ("a/seedy", 3)


def test_export_names_the_studies_a_storage_holds(tmp_path):
    import optuna

    from mnist_ops.distributed import embedded_url, open_storage

    url = embedded_url(tmp_path)
    with pytest.raises(UserError, match="no such database file .*optuna.db"):  # and none is created
        export_study(url, "nope", tmp_path / "report")
    assert not (tmp_path / "optuna.db").exists()
    storage = open_storage(url)
    with pytest.raises(UserError, match="no study 'nope' in sqlite:///.*mnist-ops studies there: none"):
        export_study(url, "nope", tmp_path / "report")
    for name in ("a", "b"):  # two mnist-ops studies, as prepare_study leaves them
        study = optuna.create_study(study_name=name, storage=storage)
        study.set_user_attr("spec", "")
        study.set_user_attr("queued", 0)
    for name in ("a:grow-from:0123456789abcdef", "a:retry-of-3", "someone-elses"):  # locks, and a plain study
        optuna.create_study(study_name=name, storage=storage)
    with pytest.raises(UserError, match=r"no study 'nope' .*\(mnist-ops studies there: a, b\); pass --study-name$"):
        export_study(url, "nope", tmp_path / "report")


@pytest.mark.parametrize("command", ["status", "report"])
def test_status_and_report_refuse_a_tune_search_by_name(command, tmp_path, capsys):
    """A tune search stores a spec too, with no variants: status once failed on it with max() of nothing."""
    from mnist_ops.cli import main
    from mnist_ops.distributed import embedded_url
    from mnist_ops.tune import create_study, parse_tune_spec

    url = embedded_url(tmp_path)
    search = {"preset": "seed-lean", "validation": 300, "base": {"epochs": 1},
              "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}, "objective": {"last_k": 1}}
    create_study(parse_tune_spec(search, "t.toml"), url, "t")
    code = main(["study", command, str(tmp_path / "study"), "--storage", url, "--study-name", "t"])
    assert code == 2 and capsys.readouterr().err.splitlines() == [
        f"mnist-ops: error: study 't' in {url} is not an mnist-ops study (a `mnist-ops tune` search); pass the "
        "--study-name of a study run with `mnist-ops study --storage`"]
    assert not (tmp_path / "study").exists()


SPEC = """
name = "tiny-shared"
seeds = [1, 2]
[defaults]
epochs = 1
limit_train = 500
batch_size = 64
device = "cpu"
[[variant]]
name = "plain"
preset = "seed-lean"
model = "seed-lean-plain"
augment = "none"
[[variant]]
name = "bn"
preset = "seed-lean"
model = "seed-lean-bn"
augment = "none"
"""


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "mnist_ops", *args], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.integration
def test_study_on_postgres_two_workers_every_run_once_report_rebuilt_from_storage(postgres, mnist_root, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from mnist_ops.distributed import open_storage, storage_url

    url = postgres.create_database()
    (tmp_path / "spec.toml").write_text(SPEC)
    trained = tmp_path / "trained"
    run_cli("study", "--spec", str(tmp_path / "spec.toml"), "--storage", url, "--workers", "2", "--out", str(trained),
            "--no-progress", "--data-root", str(mnist_root))

    study = optuna.load_study(study_name="tiny-shared", storage=open_storage(storage_url(url, tmp_path)))
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs["run"] for t in trials) == ["bn/seed1", "bn/seed2", "plain/seed1", "plain/seed2"]
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    for trial in trials:
        assert read_jsonl(trained / trial.user_attrs["run"] / "metrics.jsonl") == trial.user_attrs["metrics"]

    rebuilt = tmp_path / "rebuilt"
    run_cli("study", "report", str(rebuilt), "--storage", url, "--data-root", str(mnist_root))
    assert (rebuilt / "report.md").read_text() == (trained / "report.md").read_text()
    assert (rebuilt / "index.html").read_text() == (trained / "index.html").read_text()
    assert not list(rebuilt.rglob("*.pt"))  # built from the storage alone


@pytest.mark.integration
def test_a_run_that_failed_is_queued_again_by_the_next_invocation_once(train_only_root, mnist_root, tmp_path):
    """The first invocation's data root lacks the test set, so its run fails; the next one, with the
    data at hand, queues that run again and trains it; a third finds nothing to do."""
    import optuna
    from optuna.trial import TrialState

    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import run_shared_study

    spec = parse_spec({"name": "one", "seeds": [1], "defaults": {"epochs": 1, "limit_train": 300, "device": "cpu"},
                       "variant": [{"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain"}]}, "one.toml")
    out, url, messages = tmp_path / "study", embedded_url(tmp_path), []
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte is missing"):
        run_shared_study(spec, out, url, "one", data_root=train_only_root, log=messages.append)
    for _ in range(2):
        run_shared_study(spec, out, url, "one", data_root=mnist_root, log=messages.append)
    trials = optuna.load_study(study_name="one", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["retry_history"] == [0] and trials[1].user_attrs["run"] == "plain/seed1"
    assert sum("failed earlier" in message for message in messages) == 1
    done = json.loads((out / "plain" / "seed1" / "done.json").read_text())
    assert done["seed"] == 1 and done["environment"]["code_version"]  # travels in the storage with done.json


@pytest.mark.integration
def test_a_run_stopped_by_ctrl_c_shows_as_interrupted_and_the_next_invocation_resumes_it(mnist_root, tmp_path,
                                                                                         monkeypatch, capfd):
    """Ctrl+C or SIGTERM during a run: Optuna printed a 40-line traceback, `study status` called the run failed,
    with "KeyboardInterrupt:" as its reason, and another command's workers on the study, not queueing it, ended in
    "failed and nothing is queued". The run is queued again at once."""
    import mnist_ops.train
    from mnist_ops.distributed import embedded_url
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import INVOCATION_PREFIX, export_study, run_shared_study, storage_status

    spec = parse_spec({"name": "one", "seeds": [1], "defaults": {"epochs": 1, "limit_train": 300, "device": "cpu"},
                       "variant": [{"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain"}]}, "one.toml")
    out, url, messages = tmp_path / "study", embedded_url(tmp_path), []
    real_fit = mnist_ops.train.fit

    recorded_while_training = []

    def stopped_fit(*args, **kwargs):  # as a SIGKILL would find it: the invocation is recorded from its start
        recorded_while_training.extend(value for key, value in load_study().user_attrs.items()
                                       if key.startswith(INVOCATION_PREFIX))
        raise KeyboardInterrupt

    def load_study():
        import optuna

        from mnist_ops.distributed import open_storage

        return optuna.load_study(study_name="one", storage=open_storage(url))

    monkeypatch.setattr(mnist_ops.train, "fit", stopped_fit)
    with pytest.raises(KeyboardInterrupt):
        run_shared_study(spec, out, url, "one", data_root=mnist_root, log=messages.append)
    assert capfd.readouterr().err == ""
    assert [entry["completed"] for entry in recorded_while_training] == [False]
    [row] = storage_status(url, "one")
    assert row.state == "queued"  # for any worker of the study, this command's or another's
    def exported_meanwhile(*args, **kwargs):  # another machine exports while this invocation trains
        export_study(url, "one", out)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(mnist_ops.train, "fit", exported_meanwhile)
    run_shared_study(spec, out, url, "one", data_root=mnist_root, log=messages.append)
    assert not any("queued again" in message for message in messages)  # queued once, when it stopped
    assert [row.state for row in storage_status(url, "one")] == ["done"]
    invocations = json.loads((out / "study.json").read_text())["invocations"]
    assert [entry["completed"] for entry in invocations] == [False, True]  # the snapshot exported meanwhile: replaced
    assert len({entry["id"] for entry in invocations}) == 2  # each invocation once, by its own id


@pytest.mark.integration
def test_a_worker_declared_dead_while_it_trains_goes_on_without_a_traceback(mnist_root, tmp_path, monkeypatch, capfd):
    """A worker paused longer than the heartbeat (a laptop's sleep, SIGSTOP) finds its run failed and queued again by
    another: it crashed with Optuna's traceback and "Cannot tell a FAIL trial", exported nothing, and exited 1."""
    import optuna
    from optuna.trial import TrialState

    import mnist_ops.train
    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import run_shared_study, storage_status

    spec = parse_spec({"name": "one", "seeds": [1], "defaults": {"epochs": 1, "limit_train": 300, "device": "cpu"},
                       "variant": [{"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain"}]}, "one.toml")
    out, url, messages = tmp_path / "study", embedded_url(tmp_path), []
    real_fit, calls = mnist_ops.train.fit, []

    def declared_dead_meanwhile(*args, **kwargs):
        if not calls:  # as another worker's sweep does to this worker's run, while it trains
            study = optuna.load_study(study_name="one", storage=open_storage(url))
            [running] = [trial for trial in study.get_trials() if trial.state == TrialState.RUNNING]
            study._storage.set_trial_state_values(running._trial_id, state=TrialState.FAIL)
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study._storage.get_trial(running._trial_id))
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(mnist_ops.train, "fit", declared_dead_meanwhile)
    run_shared_study(spec, out, url, "one", data_root=mnist_root, log=messages.append)
    assert "this worker's run was declared dead by another worker and re-queued; going on" in messages
    assert capfd.readouterr().err == "" and len(calls) == 2  # the queued copy was trained, here
    assert [row.state for row in storage_status(url, "one")] == ["done"]
    assert (out / "study.json").is_file()  # exported

    def stopped_after_declared_dead(*args, **kwargs):  # Ctrl+C after the pause: Optuna's error of the dead run hid it
        study = optuna.load_study(study_name="two", storage=open_storage(url))
        [running] = [trial for trial in study.get_trials() if trial.state == TrialState.RUNNING]
        study._storage.set_trial_state_values(running._trial_id, state=TrialState.FAIL)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study._storage.get_trial(running._trial_id))
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_ops.train, "fit", stopped_after_declared_dead)
    with pytest.raises(KeyboardInterrupt):
        run_shared_study(spec, tmp_path / "two", url, "two", data_root=mnist_root, log=messages.append)


@pytest.mark.integration
def test_a_study_and_a_search_refuse_each_others_names_and_a_failing_storage_writes_nothing(mnist_root, tmp_path):
    """study --study-name of a tune search waited 2 minutes, then advised deleting the search; tune --study-name of a
    study said "unknown key(s) ... variant"; a storage that failed to open left spec.toml behind, which then refused
    the corrected command."""
    from test_tune import tiny_values

    from mnist_ops.distributed import embedded_url
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import run_shared_study
    from mnist_ops.tune import create_study, parse_tune_spec

    url = embedded_url(tmp_path)
    search = parse_tune_spec(tiny_values(), "tiny.toml")
    create_study(search, url, "search")
    spec = parse_spec({"name": "one", "seeds": [1], "defaults": {"epochs": 1, "limit_train": 300, "device": "cpu"},
                       "variant": [{"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain"}]}, "one.toml")
    with pytest.raises(UserError, match="^study 'search' in the storage is a `mnist-ops tune` search, not a study of "
                                        "variants and seeds; pass another --study-name$"):
        run_shared_study(spec, tmp_path / "a", url, "search", data_root=mnist_root, log=lambda message: None)
    assert not (tmp_path / "a").exists()
    run_shared_study(spec, tmp_path / "b", url, "one", data_root=mnist_root, log=lambda message: None)
    with pytest.raises(UserError, match="^study 'one' in the storage is a `mnist-ops study` .*, not a tune search; "
                                        "pass another --study-name$"):
        create_study(search, url, "one")
    with pytest.raises(UserError, match="is not a database URL"):
        run_shared_study(spec, tmp_path / "c", "postgress://u:p@127.0.0.1/x", "one", data_root=mnist_root,
                         log=lambda message: None)
    assert not (tmp_path / "c").exists()


@pytest.mark.integration
def test_a_diverging_run_is_pruned_once_and_exported_as_diverged(mnist_root, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study import DIVERGED_FILE, parse_spec
    from mnist_ops.study_storage import run_shared_study

    spec = parse_spec({"name": "hot", "seeds": [1], "defaults": {"epochs": 1, "limit_train": 1000, "batch_size": 64,
                                                           "device": "cpu"},
                       "variant": [{"name": "hot", "preset": "seed-baseline", "lr": 10.0},  # NaN in epoch 0
                                   {"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain",
                                    "precision": "bf16", "channels_last": True}]}, "hot.toml")
    out, url, messages = tmp_path / "study", embedded_url(tmp_path), []
    for _ in range(2):  # the second invocation finds the study finished: the divergence is not retried
        run_shared_study(spec, out, url, "hot", data_root=mnist_root, log=messages.append)
    trials = optuna.load_study(study_name="hot", storage=open_storage(url)).get_trials()
    assert sorted((t.user_attrs["run"], t.state) for t in trials) == [("hot/seed1", TrialState.PRUNED),
                                                                  ("plain/seed1", TrialState.COMPLETE)]
    diverged = json.loads((out / "hot" / "seed1" / DIVERGED_FILE).read_text())
    assert diverged["diverged"].startswith("training loss became nan at epoch 0")
    status = run_cli("study", "status", str(out)).splitlines()  # the embedded storage in the study directory
    assert status[0] == "study hot: 2 runs: 1 diverged, 1 done"
    assert status[1].split()[:3] == ["hot/seed1", "diverged", "0/1"] and "loss became nan" in status[1]
    assert status[2].split()[:3] == ["plain/seed1", "done", "1/1"]
    exported = export_study(url, "hot", tmp_path / "elsewhere")
    assert json.loads((exported / "hot" / "seed1" / DIVERGED_FILE).read_text()) == diverged
    assert (exported / "plain" / "seed1" / "done.json").is_file()
    # the predictions the worker recorded are those of the run's own (bf16) evaluation, image for image
    predictions = json.loads((exported / "plain" / "seed1" / "test_predictions.json").read_text())
    logged = json.loads((out / "plain" / "seed1" / "metrics.jsonl").read_text().splitlines()[-1])
    from mnist_ops.data import load_split

    labels = load_split("mnist", "test", mnist_root).labels.tolist()
    assert sum(p == y for p, y in zip(predictions, labels)) == logged["test_correct"]


def test_runs_are_queued_seed_by_seed_so_a_partial_study_has_every_variant():
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import queue_order, spec_labels

    spec = parse_spec({"name": "q", "seeds": 2, "variant": [{"name": "a", "preset": "seed-lean"},
                                                            {"name": "b", "preset": "seed-lean"}]}, "q.toml")
    assert queue_order(spec) == ["a/seed1", "b/seed1", "a/seed2", "b/seed2"]
    assert sorted(queue_order(spec)) == sorted(spec_labels(spec))


def test_a_stored_study_outlives_a_new_config_key(tmp_path):
    """Specs are compared parsed: a study stored by older code (without a key added since) resumes."""
    import optuna

    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study import parse_spec, spec_to_toml
    from mnist_ops.study_storage import prepare_study

    values = {"name": "old", "seeds": [1], "variant": [{"name": "a", "preset": "seed-lean"}]}
    spec, url = parse_spec(values, "old.toml"), embedded_url(tmp_path)
    prepare_study(spec, url, "old", {"a": 60000}, log=lambda message: None)
    study = optuna.load_study(study_name="old", storage=open_storage(url))
    older = "".join(line for line in spec_to_toml(spec).splitlines(keepends=True) if not line.startswith("ema ="))
    assert older != spec_to_toml(spec)
    study.set_user_attr("spec", older)  # as written before Config had `ema`
    prepare_study(spec, url, "old", {"a": 60000}, log=lambda message: None)
    changed = parse_spec({**values, "variant": [{"name": "a", "preset": "seed-lean", "lr": 0.2}]}, "old.toml")
    with pytest.raises(UserError, match="study 'old' in the storage holds runs of another recipe: variant 'a' changes "
                                        r"lr 0.015 -> 0.2\. .*\(or another --study-name\)"):
        prepare_study(changed, url, "old", {"a": 60000}, log=lambda message: None)


def test_status_tells_a_running_run_from_one_whose_worker_stopped_beating(tmp_path):
    import time

    import optuna

    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import prepare_study, storage_status

    spec = parse_spec({"name": "beats", "seeds": [1, 2], "variant": [{"name": "a", "preset": "seed-lean"}]}, "b.toml")
    url = embedded_url(tmp_path)
    prepare_study(spec, url, "beats", {"a": 60000}, log=lambda message: None, heartbeat=1)  # the workers' --heartbeat
    storage = open_storage(url, heartbeat=1)
    study = optuna.load_study(study_name="beats", storage=storage)
    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed to be used with Study.optimize"):
        trial = study.ask()  # takes the first queued run, as a worker's optimize does
    trial.set_user_attr("worker", "elsewhere:42")
    storage.record_heartbeat(trial._trial_id)
    rows = {row.label: row for row in storage_status(url, "beats")}  # judged by the recorded heartbeat
    assert (rows["a/seed1"].state, rows["a/seed1"].detail) == ("running", "worker elsewhere:42")
    assert rows["a/seed2"].state == "queued"
    deadline = time.monotonic() + 15  # twice the heartbeat without one, in the storage's clock (whole seconds)
    while (row := storage_status(url, "beats")[0]).state == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert row.state == "stalled" and "worker elsewhere:42 stopped beating" in row.detail
    assert storage_status(url, "beats", heartbeat=60)[0].state == "running"  # a longer --heartbeat: not yet


@pytest.mark.integration
def test_one_worker_on_a_directory_with_an_embedded_study_joins_it_instead_of_training_beside_it(mnist_root, tmp_path):
    import optuna

    from mnist_ops.distributed import embedded_url, open_storage

    (tmp_path / "spec.toml").write_text(SPEC)
    out = tmp_path / "study"
    common = ("--spec", str(tmp_path / "spec.toml"), "--seeds", "1", "--out", str(out), "--no-progress",
              "--data-root", str(mnist_root))
    run_cli("study", *common, "--workers", "2")
    (out / "bn" / "seed1" / "done.json").unlink()  # as if its worker died after training; the storage has it
    joined = run_cli("study", *common)  # --workers 1, no --storage
    assert "study 'tiny-shared' in sqlite:///" in joined and "finished earlier" not in joined
    trials = optuna.load_study(study_name="tiny-shared", storage=open_storage(embedded_url(out))).get_trials()
    assert len(trials) == 2  # nothing trained again: the storage's record of bn/seed1 stands
    assert (out / "bn" / "seed1" / "done.json").is_file()  # and the export wrote it back


def test_a_stored_study_grows_by_seeds_and_variants_each_run_queued_once(tmp_path):
    import optuna

    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import prepare_study

    def spec(seeds, names=("a",)):
        return parse_spec({"name": "g", "seeds": seeds, "variant": [{"name": n, "preset": "seed-lean"} for n in names]},
                          "g.toml")

    url, lines = embedded_url(tmp_path), []
    prepare_study(spec([1]), url, "g", {"a": 60000}, log=lines.append)
    study, whole = prepare_study(spec([1, 2], ("a", "b")), url, "g", {"a": 60000, "b": 60000}, log=lines.append)
    assert whole == spec([1, 2], ("a", "b"))
    assert lines[-1] == ("study 'g' grows: 3 more run(s) queued (b/seed1, a/seed2, b/seed2); finished runs are kept")
    for again in (spec([1]), spec([2, 1], ("b", "a"))):  # a part of the study, or all of it again: nothing queued
        study, whole = prepare_study(again, url, "g", {"a": 60000}, log=lines.append)
        assert whole == spec([1, 2], ("a", "b"))
    study = optuna.load_study(study_name="g", storage=open_storage(url))
    runs = [trial.user_attrs["run"] for trial in study.get_trials(deepcopy=False)]
    assert sorted(runs) == ["a/seed1", "a/seed2", "b/seed1", "b/seed2"] and study.user_attrs["queued"] == 4


def test_missing_data_fails_before_the_study_directory_is_written(tmp_path):
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import run_shared_study

    values = {"name": "s", "seeds": [1], "variant": [{"name": "a", "preset": "seed-lean"}]}
    (tmp_path / "db").mkdir()
    with pytest.raises(UserError, match="mnist-ops data fetch"):
        run_shared_study(parse_spec(values, "s.toml"), tmp_path / "study", f"sqlite:///{tmp_path / 'db' / 's.db'}",
                         "s", data_root=tmp_path / "no-data", log=lambda line: None)
    assert not (tmp_path / "study").exists()


def test_a_shared_study_run_again_with_more_seeds_trains_only_the_new_ones(tmp_path, mnist_root):
    from mnist_ops.distributed import embedded_url
    from mnist_ops.study import parse_spec, read_spec
    from mnist_ops.study_storage import run_shared_study

    values = {"name": "grow", "seeds": [1], "defaults": {"epochs": 1, "limit_train": 300, "batch_size": 64,
                                                          "device": "cpu"},
              "variant": [{"name": "a", "preset": "seed-lean", "model": "seed-lean-plain", "augment": "none"}]}
    out, lines = tmp_path / "study", []
    run_shared_study(parse_spec(values, "grow.toml"), out, embedded_url(out), "grow", log=lines.append)
    first = (out / "a" / "seed1" / "metrics.jsonl").read_text()
    lines.clear()
    run_shared_study(parse_spec({**values, "seeds": [1, 2]}, "grow.toml"), out, embedded_url(out), "grow",
                     log=lines.append)
    assert "study 'grow' grows: 1 more run(s) queued (a/seed2); finished runs are kept" in lines
    assert [line for line in lines if line.endswith(")") and ": training (trial" in line] == [
        "a/seed2: training (trial 1)"]
    assert (out / "a" / "seed1" / "metrics.jsonl").read_text() == first  # not trained again
    assert read_spec(out / "spec.toml").seeds == (1, 2) and (out / "a" / "seed2" / "done.json").is_file()


def test_a_local_study_moved_to_a_storage_with_fewer_seeds_queues_the_whole_directory(tmp_path, mnist_root):
    """`study --workers 2 --seeds 1` on a local study of seeds 1-2 queued seed 1 only, trained it, and then failed
    to export into the directory ("holds a different study"), its report unwritten (a review)."""
    from mnist_ops.distributed import embedded_url
    from mnist_ops.study import parse_spec, read_spec, run_study
    from mnist_ops.study_storage import run_shared_study

    values = {"name": "moved", "seeds": [1, 2], "defaults": {"epochs": 1, "limit_train": 300, "batch_size": 64,
                                                              "device": "cpu"},
              "variant": [{"name": "a", "preset": "seed-lean", "model": "seed-lean-plain", "augment": "none"}]}
    out = tmp_path / "study"
    run_study(parse_spec(values, "moved.toml"), out, log=lambda line: None)
    (out / "a" / "seed2" / "done.json").unlink()  # as if it stopped before it wrote this: the storage redoes it
    lines = []
    run_shared_study(parse_spec({**values, "seeds": [1]}, "moved.toml"), out, embedded_url(out), "moved",
                     log=lines.append)
    assert "study 'moved': created, 2 runs queued" in lines
    assert read_spec(out / "spec.toml").seeds == (1, 2)
    assert all((out / "a" / f"seed{seed}" / "done.json").is_file() for seed in (1, 2))


def _grow_spec_values(seeds, names=("a",)):
    from mnist_ops.study import parse_spec

    return parse_spec({"name": "g", "seeds": seeds, "variant": [{"name": n, "preset": "seed-lean"} for n in names]},
                      "g.toml")


def test_two_processes_growing_a_study_at_once_queue_each_run_once_and_keep_both_growths(tmp_path):
    import threading

    import optuna

    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study_storage import prepare_study

    url = embedded_url(tmp_path)
    prepare_study(_grow_spec_values([1]), url, "g", {"a": 60000}, log=lambda line: None)
    errors = []

    def grow(spec):
        try:
            prepare_study(spec, url, "g", {"a": 60000, "b": 60000}, log=lambda line: None)
        except Exception as error:  # reported below: a thread's exception would be lost
            errors.append(error)

    threads = [threading.Thread(target=grow, args=(spec,)) for spec in
               (_grow_spec_values([1, 2]), _grow_spec_values([1], ("a", "b")), _grow_spec_values([1, 2]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=200)
    assert not errors
    study = optuna.load_study(study_name="g", storage=open_storage(url))
    runs = sorted(trial.user_attrs["run"] for trial in study.get_trials(deepcopy=False))
    assert runs == ["a/seed1", "a/seed2", "b/seed1", "b/seed2"]  # each once, the grown variant on every seed
    assert study.user_attrs["queued"] == 4


def test_a_worker_started_before_the_study_grew_learns_a_new_variant_from_the_storage(tmp_path):
    from types import SimpleNamespace

    import optuna

    from mnist_ops.distributed import embedded_url, open_storage
    from mnist_ops.study_storage import StudyWorker, prepare_study

    url = embedded_url(tmp_path)
    prepare_study(_grow_spec_values([1]), url, "g", {"a": 60000}, log=lambda line: None)
    worker = StudyWorker(_grow_spec_values([1]), url, "g", tmp_path / "out", None, 30, False, lambda line: None)
    prepare_study(_grow_spec_values([1], ("a", "b")), url, "g", {"a": 60000, "b": 60000}, log=lambda line: None)
    trial = SimpleNamespace(study=optuna.load_study(study_name="g", storage=open_storage(url)))
    assert [variant.name for variant in worker._spec_naming("b/seed1", trial).variants] == ["a", "b"]
    assert worker._spec_naming("a/seed1", trial) is worker.spec  # a run it knows: its own spec


def test_a_worker_started_before_the_study_grew_trains_the_added_runs_too(tmp_path, mnist_root):
    """A worker stopped once the runs of its own spec were done, leaving the runs another machine added queued."""
    from mnist_ops.distributed import embedded_url
    from mnist_ops.study import parse_spec
    from mnist_ops.study_storage import StudyWorker, prepare_study

    values = {"name": "g", "seeds": [1], "defaults": {"epochs": 1, "limit_train": 200, "batch_size": 100,
                                                       "device": "cpu"},
              "variant": [{"name": "a", "preset": "seed-lean", "model": "seed-lean-plain", "augment": "none"}]}
    url, lines = embedded_url(tmp_path), []
    first = parse_spec(values, "g.toml")
    prepare_study(first, url, "g", {"a": 200}, log=lambda line: None)
    worker = StudyWorker(first, url, "g", tmp_path / "out", mnist_root, 30, False, lines.append)
    prepare_study(parse_spec({**values, "seeds": [1, 2]}, "g.toml"), url, "g", {"a": 200}, log=lambda line: None)
    worker.run()
    assert [line for line in lines if ": training (trial" in line] == ["a/seed1: training (trial 0)",
                                                                       "a/seed2: training (trial 1)"]
    assert all((tmp_path / "out" / "a" / f"seed{seed}" / "done.json").is_file() for seed in (1, 2))


def test_export_into_a_directory_of_the_study_before_it_grew(tmp_path):
    from mnist_ops.distributed import embedded_url
    from mnist_ops.study import spec_to_toml
    from mnist_ops.study_storage import export_study, prepare_study

    (tmp_path / "db").mkdir()
    url = embedded_url(tmp_path / "db")
    prepare_study(_grow_spec_values([1]), url, "g", {"a": 60000}, log=lambda line: None)
    prepare_study(_grow_spec_values([1, 2]), url, "g", {"a": 60000}, log=lambda line: None)
    before = tmp_path / "before"
    before.mkdir()
    (before / "spec.toml").write_text(spec_to_toml(_grow_spec_values([1])))
    earlier = [{"command": "mnist-ops study here", "finished": "2026-11-01 10:00:00", "seconds": 5.0, "completed": True}]
    (before / "study.json").write_text(json.dumps({"command": "mnist-ops study here", "machine": "m",
                                                   "train_images": {"a": 60000}, "invocations": earlier}))
    export_study(url, "g", before)  # the same study, grown since: accepted, and spec.toml follows the storage
    assert (before / "spec.toml").read_text() == spec_to_toml(_grow_spec_values([1, 2]))
    # the invocations that ran in this directory before the study moved to the storage are kept
    assert json.loads((before / "study.json").read_text())["invocations"][:1] == earlier
    other = tmp_path / "other"
    other.mkdir()
    (other / "spec.toml").write_text(spec_to_toml(_grow_spec_values([1], ("c",))))
    with pytest.raises(UserError, match="holds a different study"):
        export_study(url, "g", other)


def test_a_worker_reads_the_studys_runs_before_its_trials(tmp_path, monkeypatch):
    """A grower queues its trials, then records the grown spec: read in the other order, a worker could find a run
    of the spec with no trial yet, and stop with "failed and nothing is queued"."""
    from mnist_ops.distributed import embedded_url
    from mnist_ops.study_storage import StudyWorker, prepare_study

    url = embedded_url(tmp_path)
    prepare_study(_grow_spec_values([1]), url, "g", {"a": 60000}, log=lambda line: None)
    worker = StudyWorker(_grow_spec_values([1]), url, "g", tmp_path / "out", None, 30, False, lambda line: None)
    order = []
    monkeypatch.setattr(StudyWorker, "_study_labels", lambda self, study: order.append("runs") or {"a/seed1"})
    monkeypatch.setattr(StudyWorker, "objective", lambda self, trial: order.append("trained") or 99.0)
    import optuna

    real = optuna.study.Study.get_trials
    monkeypatch.setattr(optuna.study.Study, "get_trials", lambda self, **kw: order.append("trials") or real(self, **kw))
    worker.run()
    assert order[:2] == ["runs", "trials"] and "trained" in order


def test_reading_an_empty_postgres_database_leaves_it_without_tables(postgres, tmp_path, capsys):
    """`study status` on a database no study ran in (a mistyped name, a fresh server) says so and creates nothing."""
    import sqlalchemy

    from mnist_ops.cli import main

    url = postgres.create_database()
    code = main(["study", "status", str(tmp_path / "study"), "--storage", url])
    assert code == 2 and "holds no mnist-ops study (no Optuna tables)" in capsys.readouterr().err
    engine = sqlalchemy.create_engine(url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


@pytest.mark.integration
@pytest.mark.parametrize("stop, code", [("ctrl-c", 130), ("sigterm", 143)])
def test_a_stopped_study_with_two_workers_queues_both_runs_again(stop, code, mnist_root, tmp_path):
    """Ctrl+C reaches the command and its worker processes together; the command then sent SIGTERM, which killed
    the workers (no handler in them) before they queued their runs: both stayed "running" until their heartbeats
    went stale (an audit). SIGTERM to the command alone (a job scheduler) never reached the workers' handlers."""
    import os
    import signal
    import time

    from mnist_ops.distributed import embedded_url
    from mnist_ops.study_storage import storage_status

    (tmp_path / "two.toml").write_text('name = "two"\nseeds = 2\n[defaults]\nepochs = 20\nlimit_train = 2000\n'
                                       'device = "cpu"\n[[variant]]\nname = "a"\npreset = "seed-lean"\n')
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "mnist_ops", "study", "--spec", str(tmp_path / "two.toml"),
                                "--out", str(out), "--workers", "2", "--data-root", str(mnist_root), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.monotonic() + 120
    while sum((out / "a" / f"seed{seed}" / "metrics.jsonl").is_file() for seed in (1, 2)) < 2:  # both train
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    if stop == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl+C: the whole foreground process group
    else:
        process.send_signal(signal.SIGTERM)  # the command alone
    output, _ = process.communicate(timeout=120)
    assert process.returncode == code, output
    assert "Traceback" not in output and "ignored" not in output
    assert [row.state for row in storage_status(embedded_url(out), "two")] == ["queued", "queued"]
