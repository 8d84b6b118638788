import multiprocessing
import time

import pytest

from mnist_ops.distributed import DeadTrials, beat_now, describe_url, embedded_url, open_storage, storage_url
from mnist_ops.errors import UserError


def test_storage_urls(tmp_path):
    assert storage_url(None, tmp_path) == embedded_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    assert storage_url("postgresql://u:secret@db:5432/x", tmp_path) == "postgresql+psycopg://u:secret@db:5432/x"
    assert describe_url("postgresql+psycopg://u:secret@db:5432/x") == "postgresql+psycopg://u:***@db:5432/x"


@pytest.mark.parametrize("url, message", [
    ("not a url", "is not a database URL"),
    ("mysql://u@127.0.0.1/x", "no database driver"),
    ("postgress://user:secret@127.0.0.1:5432/x", r"^storage URL 'postgress://user:\*\*\*@127.0.0.1:5432/x' is not a "
                                                 "database URL"),  # a typo once showed the password
])
def test_bad_storage_urls_are_user_errors(url, message):
    with pytest.raises(UserError, match=message) as error:
        open_storage(url)
    assert "secret" not in str(error.value)


def test_a_storage_that_refuses_fails_at_once_not_after_retries(postgres):
    """A wrong password or database cannot pass by waiting: it took 8 tries and 15 s, retries meant for two
    processes creating the tables at once."""
    import time

    wrong = storage_url(postgres.create_database(), ".").rsplit("/", 1)[0] + "/no_such_database"
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^cannot open storage .*no_such_database.*; check the URL"):
        open_storage(wrong)
    assert time.monotonic() - started < 3


def _open_at_once(url, barrier, results):
    barrier.wait()
    try:
        open_storage(url)
        results.put("ok")
    except BaseException as error:  # reported to the test, which shows it
        results.put(repr(error))


def test_processes_opening_an_empty_postgres_at_once_all_succeed(postgres):
    """Without the retry in open_storage, some of them die here with UniqueViolation (the studydirection enum)."""
    url = storage_url(postgres.create_database(), ".")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [results.get(timeout=5) for _ in processes] == ["ok"] * 4


def _take_queued_trials(url: str, barrier, results) -> None:
    import optuna

    study = optuna.load_study(study_name="queue", storage=open_storage(url))
    barrier.wait()
    taken = []
    while True:
        trial_id = study._pop_waiting_trial_id()  # what study.ask() and optimize() do to take a queued trial
        if trial_id is None:
            break
        taken.append(trial_id)
    results.put(taken)


def test_workers_on_an_embedded_sqlite_storage_never_take_the_same_queued_trial(tmp_path):
    """SQLite ignores the row lock Optuna takes to hand out a queued trial; without open_storage's
    BEGIN IMMEDIATE two workers sometimes both got one (seen in CI: a study run trained twice at once)."""
    import optuna

    url = embedded_url(tmp_path)
    study = optuna.create_study(study_name="queue", storage=open_storage(url))
    for number in range(60):
        study.enqueue_trial({"x": number})
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_take_queued_trials, args=(url, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    taken = [trial_id for _ in processes for trial_id in results.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)
    assert sorted(taken) == sorted(trial._trial_id for trial in study.get_trials(deepcopy=False))  # each once


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_queued_again(tmp_path):
    """Optuna's own sweep skips a RUNNING trial that never beat; without DeadTrials a worker killed in that
    moment left the search waiting for ever (a CI hang of test_tune's kill test)."""
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(embedded_url(tmp_path), heartbeat=1, retry_stale=3)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed to be used with Study.optimize"):
        orphan, alive = study.ask(), study.ask()  # RUNNING: one worker died before its first beat
    orphan.suggest_float("lr", 0.01, 0.1)
    beat_now(alive)
    dead = DeadTrials(storage, heartbeat=1)
    assert dead.sweep(study) == []  # first seen without a heartbeat: not yet
    time.sleep(2.5)  # longer than 2 x the heartbeat
    beat_now(alive)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[orphan.number].state == TrialState.RUNNING  # Optuna alone never fails it
    assert dead.sweep(study) == [orphan._trial_id]
    states = {trial.number: trial.state for trial in study.trials}
    assert (states[orphan.number], states[alive.number]) == (TrialState.FAIL, TrialState.RUNNING)
    retry = study.trials[-1]  # queued again by the storage's RetryHeartbeatStaleTrialCallback
    assert retry.state == TrialState.WAITING and retry.system_attrs["retry_history"] == [orphan.number]
    assert retry.params == study.trials[orphan.number].params
    assert dead.sweep(study) == [] and study.trials[alive.number].state == TrialState.RUNNING


MEMORY_URLS = ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:",
               "sqlite:///file:shared?mode=memory&cache=shared&uri=true"]


@pytest.mark.parametrize("url", MEMORY_URLS)
def test_an_in_memory_sqlite_storage_is_refused(url, tmp_path):
    """Each connection gets its own empty database: Optuna's tables vanish with the first one."""
    with pytest.raises(UserError, match=r"^an in-memory SQLite database cannot be shared between workers or kept; "
                                        r"give a file path, e.g. sqlite:///study.db$"):
        storage_url(url, tmp_path)


@pytest.mark.parametrize("command", ["study", "tune"])
@pytest.mark.parametrize("url", MEMORY_URLS[:3])
def test_study_and_tune_refuse_an_in_memory_storage_before_writing_anything(command, url, mnist_root, tmp_path,
                                                                            capsys):
    from mnist_ops.cli import main

    spec = tmp_path / "spec.toml"
    if command == "study":
        spec.write_text('[[variant]]\nname = "a"\npreset = "seed-lean"\n')
    else:
        spec.write_text('preset = "seed-lean"\nvalidation = 300\n[base]\nepochs = 1\n[objective]\nlast_k = 1\n'
                        '[space.lr]\ntype = "float"\nlow = 0.01\nhigh = 0.1\n')
    code = main([command, "--spec", str(spec), "--out", str(tmp_path / "out"), "--storage", url,
                 "--data-root", str(mnist_root)])
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.splitlines() == [
        "mnist-ops: error: an in-memory SQLite database cannot be shared between workers or kept; give a file path, "
        "e.g. sqlite:///study.db"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["status", "report"])
@pytest.mark.parametrize("relative", [False, True])
def test_read_only_study_commands_refuse_a_missing_sqlite_file_and_create_none(command, relative, tmp_path, capsys,
                                                                                monkeypatch):
    """Opening a missing SQLite file creates an empty one: a mistyped --storage would leave it behind."""
    from mnist_ops.cli import main

    monkeypatch.chdir(tmp_path)
    missing = "typo/optuna.db" if relative else f"{tmp_path}/typo/optuna.db"
    (tmp_path / "typo").mkdir()
    code = main(["study", command, str(tmp_path / "study"), "--storage", f"sqlite:///{missing}", "--study-name", "s"])
    stderr = capsys.readouterr().err
    assert code == 2 and len(stderr.splitlines()) == 1
    assert stderr.startswith(f"mnist-ops: error: no such database file {missing} (sqlite:///{missing}); "
                             "check the --storage path")
    assert list(tmp_path.rglob("*")) == [tmp_path / "typo"]


def test_read_only_study_commands_open_an_existing_sqlite_file(tmp_path, capsys):
    from mnist_ops.cli import main

    open_storage(embedded_url(tmp_path))  # Optuna's tables, no study
    code = main(["study", "status", str(tmp_path / "study"), "--storage", embedded_url(tmp_path)])
    err = capsys.readouterr().err  # once "pass --study-name NAME", which no name could satisfy (audit)
    assert code == 2 and "holds no mnist-ops study; check the URL and its database name, or start one with" in err


@pytest.mark.parametrize("command", ["status", "report"])
@pytest.mark.parametrize("name", [[], ["--study-name", "s"]])
def test_read_only_study_commands_leave_a_database_without_optuna_tables_as_it_was(command, name, tmp_path, capsys):
    """`study status` and `study report` once gave an empty database Optuna's tables (an audit): a reading
    command writes nothing, and says that no study is there."""
    import sqlite3

    from mnist_ops.cli import main

    database = tmp_path / "empty.db"
    with sqlite3.connect(database) as connection:  # an existing SQLite file, with no tables
        connection.execute("CREATE TABLE scratch (a)")
        connection.execute("DROP TABLE scratch")
    before = database.read_bytes()
    code = main(["study", command, str(tmp_path / "study"), "--storage", f"sqlite:///{database}", *name])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == [
        f"mnist-ops: error: sqlite:///{database} holds no mnist-ops study (no Optuna tables); check the URL and its "
        "database name, or start one with `mnist-ops study --spec FILE.toml --storage URL`"]
    assert database.read_bytes() == before and not (tmp_path / "study").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")  # study.ask
def test_a_worker_judges_others_by_the_longest_heartbeat_recorded_on_the_study(tmp_path):
    """A command with --heartbeat 1 swept another's live workers (heartbeat 30) as dead 2 s after their last beat,
    and their runs trained twice (an audit on PostgreSQL): the sweep's grace is twice the longest recorded."""
    import optuna
    from optuna.trial import TrialState

    from mnist_ops.distributed import record_heartbeat

    url = embedded_url(tmp_path)
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=30))
    record_heartbeat(study, 30)
    trial = study.ask()
    study._storage.record_heartbeat(trial._trial_id)  # the other command's worker beat just now
    quick = open_storage(url, heartbeat=1)
    mine = optuna.load_study(study_name="s", storage=quick)
    record_heartbeat(mine, 1)
    dead = DeadTrials(quick, 1)
    dead.judge_by_the_longest(mine)
    assert dead.grace == quick.grace_period == 60
    time.sleep(2.5)  # past 2 x 1 s, well within 2 x 30 s
    dead.sweep(mine)
    optuna.storages.fail_stale_trials(mine)  # as Optuna does when this worker's next trial starts
    assert mine.get_trials(deepcopy=False)[0].state == TrialState.RUNNING
