"""Optuna storage and worker processes, shared by `tune` and `study --storage`.

One Optuna study lives in a storage that every worker opens: by default an embedded SQLite file
in the output directory, or any SQLAlchemy URL (a PostgreSQL server for several machines).
Workers record a heartbeat; a worker that stops beating (SIGKILL, machine lost) has its trial
marked FAIL by the next worker that looks, and `RetryHeartbeatStaleTrialCallback` (Optuna 5's
name for the old `RetryFailedTrialCallback`) queues the same trial again.

Why SQLite and not Optuna's journal file for the embedded default:
- In Optuna 5.0 only `RDBStorage` implements the heartbeat (`JournalStorage` does not inherit
  `BaseHeartbeat`; optuna/optuna#6615 asks for it, its pull request #6622 was closed unmerged).
  With the journal file a killed worker's trial would stay RUNNING forever and never be retried.
- The journal file locks with a symlink or an O_EXCL file; a worker killed while holding it
  leaves the lock behind and the others wait out its 30 s grace period. SQLite's fcntl locks
  are dropped by the kernel when the process dies.
- SQLite's known weak spot is "database is locked" when many processes write at once
  (optuna/optuna#820; the FAQ added by #4034 warns against SQLite for parallel optimization),
  worst when they all start together and race to create the tables. Here the tables and the
  study are created once, before the workers start; each worker writes a few rows per epoch of
  seconds; and the busy timeout is raised to 60 s. The journal file's advantage, working on NFS
  where fcntl locks are broken, does not apply to a file in a local output directory; for
  several machines use a PostgreSQL server.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

from mnist_ops.errors import Terminated, UserError, interrupted_code

EMBEDDED_FILE = "optuna.db"
HEARTBEAT_SECONDS = 30  # a trial is declared dead after 2 x this without a heartbeat
SQLITE_BUSY_SECONDS = 60
STOP_GRACE_SECONDS = 30  # a stopped command's wait for its workers to queue their runs again
CREATE_ATTEMPTS = 8  # opening a storage whose tables another process is creating at the same moment


def embedded_url(directory: str | os.PathLike) -> str:
    return f"sqlite:///{(Path(directory) / EMBEDDED_FILE).resolve()}"


def storage_url(storage: str | None, directory: str | os.PathLike, read_only: bool = False) -> str:
    """The URL to open: the user's, with `postgresql://` mapped to the installed psycopg 3 driver,
    or the embedded SQLite file in `directory`. A SQLite URL must name a file; with `read_only`
    (`study status`, `study report`) a file that exists, since opening a missing one creates it."""
    if not storage:
        Path(directory).mkdir(parents=True, exist_ok=True)
        return embedded_url(directory)
    if storage.startswith("postgresql://") or storage.startswith("postgres://"):
        return "postgresql+psycopg://" + storage.split("://", 1)[1]
    _check_sqlite(storage, read_only)
    return storage


def _check_sqlite(url: str, read_only: bool) -> None:
    """Refuse an in-memory SQLite database: each worker, and each connection after open_storage's
    engine.dispose(), gets a new empty one, so Optuna's tables are gone before the first study is made.
    With `read_only`, refuse a file that does not exist: SQLite would create it, empty, at a mistyped path."""
    if url.split(":", 1)[0].split("+", 1)[0] != "sqlite":
        return
    require_optuna()  # SQLAlchemy parses the URL
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return  # open_storage says what is wrong with it
    database, uri = parsed.database or "", str(parsed.query.get("uri", "")).lower() == "true"
    if database in ("", ":memory:") or (uri and (parsed.query.get("mode") == "memory" or ":memory:" in database)):
        raise UserError("an in-memory SQLite database cannot be shared between workers or kept; give a file path, "
                        "e.g. sqlite:///study.db")
    if read_only and not uri and not Path(database).is_file():  # a file: URI (uri=true) is left to SQLite
        raise UserError(f"no such database file {database} ({describe_url(url)}); check the --storage path, "
                        "relative to the current directory after sqlite:/// (absolute: sqlite:////path/to/optuna.db)")


def describe_url(url: str) -> str:
    """The URL without its password, for logs, reports and errors (also one that does not parse as a URL)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def declared_dead(error: BaseException) -> bool:
    """Whether `error` says another worker declared this one's trial dead and queued it again (this worker was
    paused, or its heartbeat was late): raised by the trial's next report or attribute, then by Optuna's telling
    the trial's end. The worker goes on with the next trial."""
    import optuna

    while error is not None:  # Optuna may raise it as another error's context ("Should not reach.")
        if isinstance(error, optuna.exceptions.UpdateFinishedTrialError) or (
                isinstance(error, ValueError) and str(error).startswith("Cannot tell a FAIL trial")):
            return True
        error = error.__context__
    return False


class HideStoppedTrials(logging.Filter):
    """Drops Optuna's two warnings of a trial that Ctrl+C or SIGTERM stopped, or that another worker declared dead
    ("Trial N failed with parameters ...", with a 40-line traceback, then "Trial N failed with value None."): the
    command says so in one line, and the trial is queued again (`requeue_interrupted`, the sweep, or the next `study`
    invocation). So are those of a trial that raised a UserError (a net of one's own that fails to train...): it ends
    the command in its one line. Other failures show."""

    def __init__(self):
        super().__init__()
        self.hidden: str | None = None  # "Trial N" while its second warning is to come

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and (isinstance(record.exc_info[1], (KeyboardInterrupt, UserError))
                                or declared_dead(record.exc_info[1])):
            self.hidden = message.split(" failed", 1)[0]
            return False
        if self.hidden and message.startswith(f"{self.hidden} failed with value"):
            self.hidden = None
            return False
        return True


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and experimental-feature warnings stay out of our log, as does its traceback
    of an interrupted trial."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    failures = logging.getLogger("optuna.study._optimize")  # where Optuna logs a failed trial
    if not any(isinstance(kind, HideStoppedTrials) for kind in failures.filters):
        failures.addFilter(HideStoppedTrials())


def requeue_interrupted(study, trial_number: int | None) -> None:
    """Queue again, with the same parameters, the trial a Ctrl-C or SIGTERM stopped (Optuna marked it failed), as
    a dead worker's trial is queued: a polite stop loses no more than a kill."""
    import optuna
    from optuna.trial import TrialState

    trial = next((trial for trial in study.get_trials(deepcopy=True) if trial.number == trial_number), None)
    if trial is not None and trial.state == TrialState.FAIL:
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def require_optuna() -> None:
    """Optuna and its database layer are the optional `tune` extra."""
    from mnist_ops.errors import require_extra

    require_extra("tune", "optuna", "sqlalchemy")


def _write_lock_on_begin(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins (BEGIN IMMEDIATE).

    Optuna hands a queued (WAITING) trial to one worker by reading its state and setting RUNNING
    in one transaction, row-locked with SELECT ... FOR UPDATE. SQLite ignores FOR UPDATE, and its
    default transactions take the write lock only at the first write, so two workers could both
    read WAITING and both run the same trial (seen in CI: the second hit the run directory's lock
    and failed the trial under the first). SQLAlchemy's recipe for SQLite: let the driver leave
    transactions alone and begin each one ourselves."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna created its tables predate the hooks


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, retry_stale: int | None = None,
                 read_only: bool = False):
    """An RDBStorage with heartbeat and retry of dead workers' trials.

    Two processes that open an empty database at the same moment both try to create Optuna's
    tables, and one fails (on PostgreSQL 15: `UniqueViolation ... studydirection`, the enum type).
    The tables exist by then, so opening again succeeds: retry a few times. `read_only` (status, report,
    export): a database without Optuna's tables holds no study, and is left as it was, not given them."""
    require_optuna()
    import optuna
    import sqlalchemy

    quiet_optuna()
    callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry_stale)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}} if url.startswith("sqlite") else {}
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            if read_only:
                _check_sqlite(url, read_only=True)  # connecting would create a missing file
                engine = sqlalchemy.create_engine(url, **engine_kwargs)
                try:
                    if not sqlalchemy.inspect(engine).has_table("studies"):
                        raise UserError(f"{describe_url(url)} holds no mnist-ops study (no Optuna tables); check the "
                                        "URL and its database name, or start one with `mnist-ops study --spec "
                                        "FILE.toml --storage URL`")
                finally:
                    engine.dispose()
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                                 heartbeat_stale_trial_callback=callback)
            if url.startswith("sqlite"):
                _write_lock_on_begin(storage.engine)
            return storage
        except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise UserError(f"storage URL {describe_url(url)!r} is not a database URL; use e.g. "
                            "postgresql://user:password@host:5432/dbname or sqlite:///path/to/file.db") from None
        except ImportError as error:
            raise UserError(f"no database driver for {describe_url(url)} ({error}); install it, or use a "
                            "postgresql:// or sqlite:/// URL") from None
        except sqlalchemy.exc.DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            # only the race of two processes creating the tables passes by itself (and SQLite's busy lock): a wrong
            # password, database or host fails at once, not after 8 tries and 15 s
            race = any(word in reason.lower() for word in ("already exists", "unique", "duplicate", "locked"))
            if attempt == CREATE_ATTEMPTS or not race:
                raise UserError(f"cannot open storage {describe_url(url)}: {reason}; check the URL, that the "
                                "server runs and accepts this user") from None
            time.sleep(random.uniform(0.2, 0.6) * attempt)


def trial_counts(study) -> dict[str, int]:
    """How many of the study's trials are in each state: {'COMPLETE': 3, 'RUNNING': 1, ...}."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def describe_counts(counts: dict[str, int]) -> str:
    """{'COMPLETE': 3, 'PRUNED': 1} as '3 complete, 1 pruned' (no trials: 'no trials')."""
    return ", ".join(f"{count} {state.lower()}" for state, count in counts.items()) or "no trials"


def beat_now(trial) -> None:
    """Record the trial's first heartbeat before the objective writes anything else.

    Optuna's heartbeat thread writes the first beat a moment after the trial is created, racing the
    objective's own writes for SQLite's lock; a worker killed before that beat leaves a RUNNING trial
    without a heartbeat, which `fail_stale_trials` skips for ever (optuna/optuna#4054 tests that it
    does). Seen in CI: a tune worker SIGKILLed just after its trial's suggestions hung the search."""
    trial.storage.record_heartbeat(trial._trial_id)


def _running_without_heartbeat(storage, study_id: int) -> set[int]:
    """Ids of the study's RUNNING trials that never recorded a heartbeat (the rows `_get_stale_trial_ids`
    of Optuna's RDBStorage skips), read the way it reads them."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState
    from sqlalchemy import orm

    with _create_scoped_session(storage.scoped_session) as session:
        running = (session.query(models.TrialModel)
                   .options(orm.selectinload(models.TrialModel.heartbeats))
                   .filter(models.TrialModel.state == TrialState.RUNNING)
                   .filter(models.TrialModel.study_id == study_id)
                   .all())
        return {trial.trial_id for trial in running if not trial.heartbeats}


class DeadTrials:
    """Fails dead workers' trials, so the storage's callback queues each again: Optuna's sweep (no
    heartbeat for 2 x the interval), plus trials that never beat at all (their worker died between
    creating the trial and its first beat; see `beat_now`) once this process has seen them without a
    heartbeat for as long. Timed on this process's clock: machines' clocks are never compared."""

    def __init__(self, storage, heartbeat: int):
        self.storage = storage  # the RDBStorage from open_storage: the one read here below Optuna's API
        self.heartbeat = heartbeat
        self.grace = 2 * heartbeat
        self.unbeaten_since: dict[int, float] = {}

    def judge_by_the_longest(self, study) -> None:
        """Judge by twice the longest --heartbeat recorded on the study (`record_heartbeat`), not this worker's own,
        here and in the sweep Optuna runs as each trial starts: judged by a shorter one, another command's live
        workers were declared dead between their beats, and their runs trained twice. This worker still beats at
        its own interval. Read again each time: a command with a longer one may join later."""
        self.grace = 2 * max(self.heartbeat, int(study.user_attrs.get("heartbeat", 0)))
        self.storage.grace_period = self.grace

    def sweep(self, study) -> list[int]:
        """Fail the dead trials; returns the ids of those that never beat and were failed here."""
        import copy

        import optuna

        optuna.storages.fail_stale_trials(study)
        now = time.monotonic()
        unbeaten = _running_without_heartbeat(self.storage, study._study_id)
        self.unbeaten_since = {trial_id: self.unbeaten_since.get(trial_id, now) for trial_id in unbeaten}
        failed = []
        for trial_id, since in self.unbeaten_since.items():  # as fail_stale_trials does for stale ones
            if now - since > self.grace:
                try:
                    if study._storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                        failed.append(trial_id)
                except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
                    pass
        callback = study._storage.get_heartbeat_stale_trial_callback()
        for trial_id in failed:
            del self.unbeaten_since[trial_id]
            if callback is not None:
                callback(study, copy.deepcopy(study._storage.get_trial(trial_id)))
        return failed


def optimize_one(study, worker, requeue: Callable[[int], object], what: str, catch: tuple = ()) -> None:
    """One trial of `study` by `worker` (a study's or a search's: it has `objective`, `log`, and `current_trial` and
    `stopped_by`, which its objective sets), with what a stop or a declared death needs. A trial stopped by Ctrl+C or
    SIGTERM is queued again (`requeue(its number)`) and the stop goes on up. A trial another worker declared dead is
    left to it, and this worker goes on; a stop hidden behind Optuna's error about that dead trial still stops."""
    worker.current_trial = worker.stopped_by = None  # a stop before the objective starts requeues nothing
    try:
        study.optimize(worker.objective, n_trials=1, catch=catch)
    except KeyboardInterrupt:
        if worker.current_trial is not None:
            requeue(worker.current_trial)
        raise
    except Exception as error:
        if not declared_dead(error):
            raise
        if worker.stopped_by is not None:
            raise worker.stopped_by from None
        worker.log(f"this worker's {what} was declared dead by another worker and re-queued; going on")


def record_heartbeat(study, heartbeat: int | None) -> None:
    """The longest --heartbeat any invocation's workers use on the study: its workers' sweeps and `study status`
    judge by it."""
    heartbeat = heartbeat or HEARTBEAT_SECONDS
    if study.user_attrs.get("heartbeat", 0) < heartbeat:
        study.set_user_attr("heartbeat", heartbeat)


def poll_seconds(heartbeat: int) -> float:
    return min(max(heartbeat / 2, 0.5), 5.0)


# ---------------------------------------------------------------------------- local worker processes

def _stop_once(signum, frame) -> None:
    """A worker's Ctrl+C or SIGTERM: stop as the command line does, once. A terminal's Ctrl+C reaches the
    workers and the parent together, and the parent then sends SIGTERM: a second stop would break off the
    worker's queueing its run again (found by an audit: both runs stayed "running" until their heartbeats
    went stale). The later stops call a handler that does nothing: with SIG_IGN, one already pending prints
    Python's "Signal 15 ignored due to race condition"."""
    signal.signal(signal.SIGINT, _stopped_already)
    signal.signal(signal.SIGTERM, _stopped_already)
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _stopped_already(signum, frame) -> None:
    """A worker's second Ctrl+C or SIGTERM, while it queues its run again: let it finish (the parent kills a
    worker still running STOP_GRACE_SECONDS after the first)."""


def _worker_entry(target: Callable, index: int, args: tuple) -> None:
    """A worker process: one thread, stops handled as in the command line, then the target."""
    os.environ["OMP_NUM_THREADS"] = "1"
    signal.signal(signal.SIGINT, _stop_once)
    signal.signal(signal.SIGTERM, _stop_once)
    import torch

    torch.set_num_threads(1)
    try:
        target(index, *args)
    except KeyboardInterrupt as error:  # the run is queued again by now; multiprocessing would print a traceback
        sys.exit(interrupted_code(error))


def run_workers(count: int, target: Callable, args: tuple, log: Callable[[str], None] = print) -> list[int]:
    """Run `target(index, *args)` in `count` processes (index 0..count-1), one thread each, and wait for
    them all. Returns their exit codes; a negative code is the signal that ended the process.

    Stopped (Ctrl+C, SIGTERM), it passes the stop on to the workers and waits up to STOP_GRACE_SECONDS for
    them to queue their runs again and exit, then kills any still running."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a clean interpreter: no torch threads forked
    processes = [context.Process(target=_worker_entry, args=(target, index, args), name=f"worker{index}")
                 for index in range(count)]
    for process in processes:
        process.start()
    log(f"started {count} worker processes (pids {', '.join(str(p.pid) for p in processes)}), one thread each")
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()  # SIGTERM: a worker that a Ctrl+C already stopped ignores it (_stop_once)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        raise
    codes = [process.exitcode for process in processes]
    for index, (process, code) in enumerate(zip(processes, codes)):
        if code in (130, 143):
            log(f"worker {index} (pid {process.pid}) was stopped ({'SIGTERM' if code == 143 else 'Ctrl+C'}); "
                "its run is queued again")
        elif code and code < 0:
            log(f"worker {index} (pid {process.pid}) was killed by signal {-code}; a live worker re-runs its "
                "trial once its heartbeat is stale")
        elif code:
            log(f"worker {index} (pid {process.pid}) failed (exit code {code}); see its lines above")
    return codes


def prefixed(log: Callable[[str], None], index: int, workers: int) -> Callable[[str], None]:
    if workers <= 1:
        return log
    return lambda message: log(f"[worker {index}] {message}")


def flushed_print(message: str) -> None:
    print(message, flush=True)

