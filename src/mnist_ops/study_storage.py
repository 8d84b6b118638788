"""A study's (variant, seed) runs on an Optuna storage: several workers, on several machines, split them.

Each run is one trial, queued once by the process that creates the study; workers pop queued
trials (Optuna moves a trial from WAITING to RUNNING for exactly one of them), train it, and put
its per-epoch records, summary, config and test-set predictions into the trial's user attributes.
A worker that dies is found by heartbeat and its run queued again (distributed.py). A run whose
training raised an error is queued again by the next invocation of the command. `export_study`
writes the study directory (spec.toml, study.json, every run's done.json, metrics.jsonl and
predictions) from the storage alone, so `study report` can be rebuilt on any machine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mnist_ops.config import Config
from mnist_ops.distributed import worker_name
from mnist_ops.errors import TrainingDiverged, UserError
from mnist_ops.fileio import atomic_write_bytes, atomic_write_json, tomllib, write_jsonl  # tomllib: or tomli on 3.10
from mnist_ops.study import (DIVERGED_FILE, DONE_FILE, PREDICTIONS_FILE, SPEC_FILE, STUDY_FILE, RunStatus, Spec,
                             last_accuracy, claim_study_dir, diverged_record, done_record, grow_spec, is_finished,
                             machine_description, read_json_object, read_metrics, read_recorded_spec, run_dir, spec_from_text,
                             spec_to_toml)

QUEUED_WAIT_SECONDS = 120  # how long a loading process waits for the creating one to queue the runs
INVOCATION_PREFIX = "invocation:"


def run_label(variant: str, seed: int) -> str:
    return f"{variant}/seed{seed}"


def parse_label(label: str) -> tuple[str, int]:
    variant, seed = label.rsplit("/seed", 1)
    return variant, int(seed)


def spec_labels(spec: Spec) -> list[str]:
    return [run_label(variant.name, seed) for variant in spec.variants for seed in spec.seeds]


def queue_order(spec: Spec) -> list[str]:
    """Seed by seed: a study stopped partway (hours long, as the reference's question) has every
    variant on its first seeds, and its report compares them, instead of one variant on all seeds."""
    return [run_label(variant.name, seed) for seed in spec.seeds for variant in spec.variants]


def trial_run(trial) -> str | None:
    """The run a trial trains: queued trials carry it as a user attribute (retries copy it)."""
    return trial.user_attrs.get("run")


def _claim(storage, name: str) -> bool:
    """True for exactly one caller per name, on any storage: Optuna refuses a second study of one name."""
    import optuna

    try:
        optuna.create_study(study_name=name, storage=storage)
        return True
    except optuna.exceptions.DuplicatedStudyError:
        return False


def prepare_study(spec: Spec, url: str, name: str, train_sizes: dict[str, int], log: Callable[[str], None],
                  heartbeat: int | None = None):
    """Create the study and queue every run, or load it (another machine made it, or a resume), queueing
    the runs this spec adds: a study grows by seeds and variants, as a local one does (study.grow_spec).
    Returns (the Optuna study, the whole study's spec).

    Runs whose training raised an error are queued again, each by exactly one process."""
    import optuna

    from mnist_ops.distributed import open_storage, record_heartbeat

    storage = open_storage(url)
    text = spec_to_toml(spec)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr("spec", text)
        study.set_user_attr("train_images", train_sizes)
        for label in queue_order(spec):
            study.enqueue_trial({}, user_attrs={"run": label})
        study.set_user_attr("queued", len(spec_labels(spec)))
        record_heartbeat(study, heartbeat)
        log(f"study '{name}': created, {len(spec_labels(spec))} runs queued")
        return study, spec
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    stored = study.user_attrs.get("spec")
    if stored is not None and "[[variant]]" not in stored:  # what `mnist-ops tune` stores: its search's spec
        raise UserError(f"study '{name}' in the storage is a `mnist-ops tune` search, not a study of variants and "
                        "seeds; pass another --study-name")
    deadline = time.monotonic() + QUEUED_WAIT_SECONDS
    while "queued" not in study.user_attrs:
        if time.monotonic() > deadline:
            raise UserError(f"study '{name}' exists but its runs were never queued (its creator died?); delete it "
                            f"with `optuna delete-study --study-name {name} --storage URL` and start again")
        time.sleep(1)
    whole = _grow(study, storage, spec, train_sizes, log)
    requeue_failed_runs(study, storage, log)
    record_heartbeat(study, heartbeat)
    return study, whole


def _grow(study, storage, spec: Spec, train_sizes: dict[str, int], log: Callable[[str], None]) -> Spec:
    """The stored study with the seeds and variants `spec` adds. One process grows it from each stored spec
    (a lock named after that spec); another that comes meanwhile reloads and grows from the result, or
    finds its runs there already. A changed recipe, name, target or last_k is refused by name."""
    import optuna

    name = study.study_name
    deadline = time.monotonic() + QUEUED_WAIT_SECONDS
    while True:
        stored_text = study.user_attrs["spec"]
        stored = spec_from_text(stored_text, f"study '{name}' in the storage")
        try:
            whole = grow_spec(stored, spec, f"study '{name}' in the storage")
        except UserError as error:
            raise UserError(f"{error} (or another --study-name)") from None
        if whole == stored:  # this spec is all or part of the study: nothing to queue
            return stored
        lock = f"{name}:grow-from:{hashlib.sha256(stored_text.encode()).hexdigest()[:16]}"
        if _claim(storage, lock):
            known = set(spec_labels(stored))
            added = [label for label in queue_order(whole) if label not in known]
            for label in added:
                study.enqueue_trial({}, user_attrs={"run": label})
            study.set_user_attr("train_images", {**study.user_attrs.get("train_images", {}), **train_sizes})
            study.set_user_attr("queued", len(spec_labels(whole)))
            study.set_user_attr("spec", spec_to_toml(whole))  # last: the next grower starts from here
            log(f"study '{name}' grows: {len(added)} more run(s) queued ({', '.join(added)}); finished runs are kept")
            return whole
        if time.monotonic() > deadline:  # the lock's holder died between queueing and recording
            raise UserError(f"another process began to grow study '{name}' and did not finish; if none runs, delete "
                            f"its lock with `optuna delete-study --study-name {lock} --storage URL` and run again")
        time.sleep(1)
        study = optuna.load_study(study_name=name, storage=storage)


def _contains(study: Spec, part: Spec) -> bool:
    """`part` names only runs of `study`, with their recipes: the study grown from it, or itself."""
    try:
        return grow_spec(study, part, Path(study.name)) == study
    except UserError:
        return False


def is_finished_trial(trial) -> bool:
    """A run that trained to the end, or diverged (pruned, with its diverged.json record: not retried)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE or (trial.state == TrialState.PRUNED and trial.user_attrs.get("diverged"))


def finished_runs(trials) -> set[str]:
    return {trial_run(trial) for trial in trials if is_finished_trial(trial)}


def requeue_failed_runs(study, storage, log: Callable[[str], None]) -> None:
    """Queue again each run whose last trial raised an error (a dead worker's trials are re-queued
    by heartbeat instead). `_claim` makes sure only one process queues each failed trial."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = finished_runs(trials)
    retried = {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}
    callback = optuna.storages.RetryHeartbeatStaleTrialCallback()
    for trial in trials:
        error = trial.user_attrs.get("error") or {}
        if (trial.state == TrialState.FAIL and error.get("trial") == trial.number and trial.number not in retried
                and trial_run(trial) not in done and _claim(storage, f"{study.study_name}:retry-of-{trial.number}")):
            callback(study, copy.deepcopy(trial))
            what = "was interrupted" if error.get("interrupted") else f"failed earlier ({error['message']})"
            log(f"study '{study.study_name}': {trial_run(trial)} {what}; queued again")


def invocation_key() -> str:
    """Unique to an invocation, even two of one process in one second (a script, a test)."""
    return f"{INVOCATION_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}:{worker_name()}:{uuid.uuid4().hex[:8]}"


def record_invocation(study, command: str, seconds: float, completed: bool, key: str) -> None:
    """One user attribute per invocation (machines cannot append to one list without a race), written when it
    starts and again when it ends: one killed outright still counts, as interrupted."""
    study.set_user_attr(key, {"command": command, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "seconds": round(seconds, 1), "completed": completed,
                              "machine": machine_description()})


def write_run_files(directory: Path, done: dict, predictions: list[int]) -> None:
    atomic_write_bytes(directory / PREDICTIONS_FILE, json.dumps(predictions).encode())
    atomic_write_json(directory / DONE_FILE, done)


@dataclass
class StudyWorker:
    spec: Spec
    url: str
    study_name: str
    out: Path
    data_root: str | None
    heartbeat: int
    progress: bool
    log: Callable[[str], None]
    current_trial: int | None = None
    stopped_by: KeyboardInterrupt | None = None  # Ctrl+C or SIGTERM, kept should Optuna raise another error for it

    def objective(self, trial) -> float:
        import optuna

        from mnist_ops.distributed import beat_now
        from mnist_ops.study_report.best_run import checkpoint_predictions
        from mnist_ops.train import fit

        self.current_trial = trial.number  # queued again at once if Ctrl+C or SIGTERM stops it (run)
        beat_now(trial)
        label = trial_run(trial)
        if label is None:  # the queue emptied between this worker's look and its ask
            raise optuna.TrialPruned("no queued run was left when this worker asked; nothing trained")
        # the run is a user attribute, not a parameter: a categorical parameter's choices cannot grow with the study
        self.spec = self._spec_naming(label, trial)
        trial.set_user_attr("worker", worker_name())
        variant_name, seed = parse_label(label)
        variant = next(v for v in self.spec.variants if v.name == variant_name)
        config = variant.config.replace(seed=seed)
        directory = run_dir(self.out, variant_name, seed)
        resume = directory.exists()  # a worker on this machine died: fit goes on from last.pt, or starts over
        def on_epoch(epoch: int, record: dict) -> None:
            trial.set_user_attr("metrics", read_metrics(directory / "metrics.jsonl"))  # fit has just written it; `study status` shows it
            trial.report(record["test_accuracy"], epoch)

        self.log(f"{label}: {'resuming' if (directory / 'last.pt').is_file() else 'training'} (trial {trial.number})")
        if trial.user_attrs.get("diverged"):  # copied into a retry from a worker that died while pruning
            trial.set_user_attr("diverged", None)
        try:
            try:
                summary = fit(config, directory, data_root=self.data_root, log=self.log, progress=self.progress,
                              on_epoch=on_epoch, resume=resume)
            except TrainingDiverged as error:  # seeded: a retry would diverge again; recorded, the study goes on
                self.log(f"{label}: diverged, {error.what}; the study goes on, and its report lists the run")
                diverged = diverged_record(directory, variant_name, seed, config, error)
                atomic_write_json(directory / DIVERGED_FILE, diverged)
                trial.set_user_attr("diverged", diverged)
                raise optuna.TrialPruned(f"diverged: {error.what}") from None
        except optuna.TrialPruned:
            raise
        except BaseException as error:  # an error: the next invocation queues the run again; Ctrl-C: run() does
            interrupted = isinstance(error, KeyboardInterrupt)  # Ctrl+C or SIGTERM (errors.Terminated)
            if interrupted:
                self.stopped_by = error
            # Its own number: a retry copies the user attributes, and must not look failed from the start.
            message = "interrupted (Ctrl+C or SIGTERM)" if interrupted else f"{type(error).__name__}: {error}"[:500]
            try:
                trial.set_user_attr("error", {"trial": trial.number, "message": message, "interrupted": interrupted})
            except optuna.exceptions.UpdateFinishedTrialError:  # declared dead meanwhile: another worker has the run
                pass
            raise
        trial.set_user_attr("metrics", read_metrics(directory / "metrics.jsonl"))  # a run that was finished before this trial has no on_epoch
        predictions = checkpoint_predictions(directory, self.data_root)[1].tolist()
        done = done_record(directory, variant_name, seed, summary, config)
        trial.set_user_attr("done", done)
        trial.set_user_attr("test_predictions", predictions)
        write_run_files(directory, done, predictions)
        return summary["last_test_accuracy"]

    def _spec_naming(self, label: str, trial) -> Spec:
        """This worker's spec, or the stored one once it names `label`: another process grew the study since
        this worker started (it queues the new runs, then records the grown spec: wait for that)."""
        deadline = time.monotonic() + QUEUED_WAIT_SECONDS
        spec = self.spec
        while label not in spec_labels(spec):
            if time.monotonic() > deadline:
                raise UserError(f"run {label} is queued but study '{self.study_name}' does not name it; "
                                "the process that grew the study died: run the growing command again")
            spec = spec_from_text(trial.study.user_attrs["spec"], f"study '{self.study_name}' in the storage")
            if label not in spec_labels(spec):
                time.sleep(1)
        return spec

    def _study_labels(self, study) -> set[str]:
        """Every run of the study as stored now: another machine may have grown it since this worker started, and
        the worker trains the added runs too, instead of stopping once the runs it was started with are done."""
        stored = spec_from_text(study.user_attrs["spec"], f"study '{self.study_name}' in the storage")
        return set(spec_labels(stored)) | set(spec_labels(self.spec))

    def run(self) -> None:
        import optuna
        from optuna.trial import TrialState

        from mnist_ops.distributed import DeadTrials, open_storage, optimize_one, poll_seconds, requeue_interrupted

        storage = open_storage(self.url, self.heartbeat)
        study = optuna.load_study(study_name=self.study_name, storage=storage)
        dead = DeadTrials(storage, self.heartbeat)
        while True:
            dead.judge_by_the_longest(study)
            # the runs before the trials: a grower queues its trials first and records the grown spec last, so every
            # run read here is in the trials read next (the other order could find a new run and not its trial)
            labels = self._study_labels(study)
            trials = study.get_trials(deepcopy=False)
            if labels <= finished_runs(trials):
                return
            states = {trial.state for trial in trials}
            if TrialState.WAITING in states:
                # a stopped run is queued again at once, once: the next invocation's requeue claims it too
                optimize_one(study, self, lambda number: _claim(storage, f"{self.study_name}:retry-of-{number}")
                             and requeue_interrupted(study, number), "run")
            elif TrialState.RUNNING in states:  # the last runs train elsewhere; wait in case a worker dies
                time.sleep(poll_seconds(self.heartbeat))
                dead.sweep(study)
            else:
                missing = sorted(labels - finished_runs(trials))
                raise UserError(f"run(s) {', '.join(missing)} failed and nothing is queued; fix the cause (see the "
                                "log) and run the same command again to retry them")


def _run_study_worker(index: int, worker: StudyWorker, workers: int) -> None:
    from mnist_ops.distributed import flushed_print, prefixed

    worker.log = prefixed(flushed_print, index, workers)
    try:
        worker.run()
    except UserError as error:
        worker.log(f"error: {error}")
        raise SystemExit(2) from None


def run_shared_study(spec: Spec, out: str | os.PathLike, url: str, study_name: str, workers: int = 1,
                     heartbeat: int | None = None, data_root=None, command: str = "", progress: bool = False,
                     log: Callable[[str], None] | None = None) -> Path:
    """Train the study's runs with `workers` local processes on the storage; other machines may join.
    Ends with the study directory exported from the storage. Returns out."""
    from mnist_ops.distributed import (HEARTBEAT_SECONDS, describe_url, embedded_url, flushed_print, require_optuna,
                                       run_workers)
    from mnist_ops.study import _checked_train_sizes

    require_optuna()
    log = log or flushed_print
    started = time.perf_counter()
    out = Path(out)
    # this directory holds this spec's runs only: checked before the storage. Its whole spec is what the storage
    # queues: a smaller one (`--seeds 1` on a directory of seeds 1-2) trained its runs, then failed to export into
    # the directory ("holds a different study"), its report unwritten (a review)
    spec = claim_study_dir(spec, out, write=False)
    sizes = _checked_train_sizes(spec, data_root)  # missing data fails before the study directory is written
    if url == embedded_url(out):  # the embedded database lives in the study directory
        out.mkdir(parents=True, exist_ok=True)
    study, spec = prepare_study(spec, url, study_name, sizes, log, heartbeat)  # a storage that fails: nothing written
    claim_study_dir(spec, out)  # and the whole study's, which other machines may have grown
    log(f"study '{study_name}' in {describe_url(url)}: {len(spec_labels(spec))} runs, {workers} local worker(s)")
    worker = StudyWorker(spec, url, study_name, out, data_root, heartbeat or HEARTBEAT_SECONDS,
                         progress and workers == 1, log)
    completed, key = False, invocation_key()
    record_invocation(study, command, 0.0, completed, key)
    try:
        if workers == 1:
            worker.run()
        else:
            codes = run_workers(workers, _run_study_worker, (worker, workers), log=log)
            if any(codes):
                worker.run()  # the survivors' share is done; this finishes what a dead one left, or says why not
        completed = True
    finally:
        record_invocation(study, command, time.perf_counter() - started, completed, key)
    export_study(url, study_name, out)
    return out


# ---------------------------------------------------------------------------- export

def _load_mnist_study(url: str, study_name: str):
    import optuna

    from mnist_ops.distributed import describe_url, open_storage

    storage = open_storage(url, read_only=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = ", ".join(mnist_study_names(storage)) or "none"
        raise UserError(f"no study '{study_name}' in {describe_url(url)} (mnist-ops studies there: {names}); "
                        "pass --study-name") from None
    try:  # a `tune` search stores its spec too: one with a search space and no variants
        stored = tomllib.loads(study.user_attrs.get("spec", ""))
    except tomllib.TOMLDecodeError:
        stored = {}
    if "variant" not in stored:
        what = "a `mnist-ops tune` search" if "space" in stored else "no spec"
        raise UserError(f"study '{study_name}' in {describe_url(url)} is not an mnist-ops study ({what}); "
                        "pass the --study-name of a study run with `mnist-ops study --storage`")
    return study


def storage_status(url: str, study_name: str, heartbeat: int | None = None) -> list[RunStatus]:
    """Each run's state from the storage (any machine can ask, without the runs' model code): its latest
    trial decides. A running run whose worker sent no heartbeat for twice the workers' --heartbeat
    (recorded in the study; `heartbeat` overrides it) is stalled."""
    from mnist_ops.distributed import HEARTBEAT_SECONDS, open_storage

    study = _load_mnist_study(url, study_name)
    from optuna.trial import TrialState

    stored = tomllib.loads(study.user_attrs["spec"])  # fully resolved by spec_to_toml: read, not parsed
    planned = {table["name"]: table.get("epochs", Config().epochs) for table in stored.get("variant", [])}
    heartbeat = heartbeat or study.user_attrs.get("heartbeat") or HEARTBEAT_SECONDS
    # RUNNING trials whose worker stopped beating: what optuna.storages.fail_stale_trials looks up
    stale = set(open_storage(url, heartbeat, read_only=True)._get_stale_trial_ids(study._study_id))
    latest = {}
    for trial in study.get_trials(deepcopy=False):
        if trial_run(trial) is not None:
            latest[trial_run(trial)] = trial  # trials come in number order: a retry replaces its original
    rows = []
    for label in [run_label(name, seed) for name in planned for seed in stored.get("seeds", [])]:
        trial = latest.get(label)
        epochs = planned[parse_label(label)[0]]
        if trial is None:
            rows.append(RunStatus(label, "not started", 0, epochs, None))
            continue
        records = trial.user_attrs.get("metrics") or []  # a retry shows its original's epochs until it resumes
        if trial.state == TrialState.RUNNING and trial._trial_id in stale:
            state, detail = "stalled", (f"worker {trial.user_attrs.get('worker', '?')} stopped beating (it died?); "
                                        "the next `mnist-ops study` invocation queues the run again")
        elif trial.state == TrialState.RUNNING:
            state, detail = "running", f"worker {trial.user_attrs.get('worker', '?')}"
        elif trial.state == TrialState.FAIL and (trial.user_attrs.get("error") or {}).get("interrupted"):
            state, detail = "interrupted", "the next `mnist-ops study` invocation resumes it"
        elif trial.state == TrialState.FAIL:
            state, detail = "failed", (trial.user_attrs.get("error") or {}).get("message", "")
        elif is_finished_trial(trial) and trial.state == TrialState.PRUNED:
            state, detail = "diverged", trial.user_attrs["diverged"].get("diverged", "")
        else:
            state, detail = {TrialState.COMPLETE: "done", TrialState.WAITING: "queued"}.get(trial.state, "pruned"), ""
        rows.append(RunStatus(label, state, len(records), epochs, last_accuracy(records), detail))
    return rows


def mnist_study_names(storage) -> list[str]:
    """The storage's `mnist-ops study` studies, sorted: not the locks `_claim` leaves (empty studies named
    NAME:grow-from:... and NAME:retry-of-N), nor tune searches or other Optuna studies."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage)
    return sorted(s.study_name for s in summaries if "spec" in s.user_attrs and "queued" in s.user_attrs)


def only_study_name(url: str) -> str:
    """The name of the one mnist-ops study in the storage; with several, the user must pick."""
    from mnist_ops.distributed import describe_url, open_storage

    names = mnist_study_names(open_storage(url, read_only=True))
    if not names:  # --study-name cannot help: no study is there to name
        raise UserError(f"{describe_url(url)} holds no mnist-ops study; check the URL and its database name, or "
                        "start one with `mnist-ops study --spec FILE.toml --storage URL`")
    if len(names) != 1:
        raise UserError(f"{describe_url(url)} holds {len(names)} mnist-ops studies ({', '.join(names) or 'none'}); "
                        "pass --study-name NAME")
    return names[0]


def export_study(url: str, study_name: str, directory: str | os.PathLike) -> Path:
    """Write the study directory from the storage: spec.toml, study.json and, for every finished run,
    done.json, metrics.jsonl and its test predictions. Files a run wrote on this machine are kept."""
    from optuna.trial import TrialState

    from mnist_ops.distributed import describe_url

    directory = Path(directory)
    study = _load_mnist_study(url, study_name)
    attrs = study.user_attrs
    existing = directory / SPEC_FILE
    stored = spec_from_text(attrs["spec"], f"study '{study_name}' in {describe_url(url)}")
    if existing.is_file() and not _contains(stored, read_recorded_spec(existing)):  # the same study, grown since, is fine
        raise UserError(f"{directory} holds a different study; pass another directory")
    atomic_write_bytes(existing, attrs["spec"].encode())
    fields = ("command", "finished", "seconds", "completed")
    invocations = sorted(({**value, "id": key} for key, value in attrs.items() if key.startswith(INVOCATION_PREFIX)),
                         key=lambda entry: entry["finished"])
    # a study that ran in this directory before it moved to the storage keeps the record of those invocations; an
    # entry exported earlier is the storage's, by its id (it may have ended since: recorded at start, then again at
    # the end) or, exported by older code without one, by its fields
    before = read_json_object(directory / STUDY_FILE, ("invocations",)) if (directory / STUDY_FILE).is_file() else {}
    shared = [{key: entry[key] for key in (*fields, "id")} for entry in invocations]
    ids, old_form = {entry["id"] for entry in shared}, [{key: entry[key] for key in fields} for entry in shared]
    local = [entry for entry in before.get("invocations", []) if isinstance(entry, dict)
             and entry.get("id") not in ids and entry not in old_form]
    info = {"command": invocations[-1]["command"] if invocations else before.get("command", ""),
            "machine": invocations[-1]["machine"] if invocations else before.get("machine", machine_description()),
            "train_images": {**before.get("train_images", {}), **attrs.get("train_images", {})},
            "invocations": sorted(local + shared, key=lambda entry: str(entry.get("finished", "")))}
    atomic_write_json(directory / STUDY_FILE, info)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if not is_finished_trial(trial):
            continue
        variant, seed = parse_label(trial_run(trial))
        run = run_dir(directory, variant, seed)
        if is_finished(run):
            continue
        if run.exists():  # left by a worker that died on this machine; another one finished the run
            shutil.rmtree(run)
        if trial.state == TrialState.PRUNED:
            atomic_write_json(run / DIVERGED_FILE, trial.user_attrs["diverged"])
            continue
        records = trial.user_attrs["metrics"]
        write_jsonl(run / "metrics.jsonl", records)
        write_run_files(run, trial.user_attrs["done"], trial.user_attrs["test_predictions"])
    return directory
