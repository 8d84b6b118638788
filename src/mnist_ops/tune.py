"""Recipe search on Optuna: a tune spec, the objective, the trial budget, the best config.

A spec names a base preset (plus fixed config keys), a search space over config keys, the
sampler, the pruner and the objective. Trials train on the training set minus a fixed,
stratified validation split and are scored on that split: tuning never loads the test set.
Workers (local processes or other machines on the same storage, see distributed.py) share one
Optuna study; `trials` caps how many trials end COMPLETE or PRUNED, over all workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shlex
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mnist_ops.config import FIELD_TYPES, Config, check_combination, resolve, stored_table, to_toml
from mnist_ops.distributed import worker_name
from mnist_ops.errors import TrainingDiverged, UserError, show
from mnist_ops.fileio import (atomic_write_bytes, atomic_write_json, read_toml,  # tomllib: or tomli on Python 3.10
                              tomllib)

TUNE_KEYS = ("name", "preset", "trials", "validation", "base", "space", "sampler", "pruner", "objective")
PARAM_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}
NOT_TUNABLE = ("preset", "dataset", "seed", "device", "validation", "validation_from", "limit_train",
               "eval_batch_size", "target_accuracy", "tensorboard")
DEFAULT_VALIDATION = 10_000
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
SCORES = ("mean", "worst")  # [objective] score: how the last K epochs (and the seeds) make one number
SCORE_WORDS = {"mean": "mean", "worst": "lowest"}
TRIALS_DIR = "trials"
STORAGE_RECORD = "storage.json"  # the storage and study name whose trials the directory holds
BEST_CONFIG = "best.toml"
CONFIRM_DIR = "confirm"
MAX_SEEDS_PER_TRIAL = 10
MAX_CORNERS = 4096  # spec check: every combination of bounds and choices is built, up to this many
MAX_SAMPLER_SEED = 2**32 - 1  # Optuna's samplers seed numpy, which takes seeds in [0, 2**32 - 1]


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def corners(self) -> tuple:
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {', '.join(map(str, self.choices))}"
        scale = "log " if self.log else ""
        step = f", step {self.step}" if self.step else ""
        return f"{scale}{self.kind} in [{self.low}, {self.high}]{step}"


@dataclass(frozen=True)
class TuneSpec:
    name: str
    base: Config  # the preset plus [base] keys plus the validation split; seed fixed for every trial
    space: tuple[Param, ...]
    trials: int
    sampler: str
    sampler_seed: int
    startup_trials: int
    pruner: str
    warmup_epochs: int
    last_k: int  # objective: validation accuracy over the last K epochs (their mean, or with score "worst" their min)
    seeds: int = 1  # objective: ... over this many seeds (base seed, base seed + 1, ...), averaged or the worst
    score: str = "mean"  # "worst": the minimum over the last K epochs and the seeds instead (a record's rule)


# ---------------------------------------------------------------------------- parsing

def _table(values: dict, key: str, source: str) -> dict:
    table = values.get(key, {})
    if not isinstance(table, dict):
        raise UserError(f"{source}: [{key}] must be a table, got {table!r}")
    return table


def _reject_unknown(table: dict, known, where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")


def _integer(table: dict, key: str, default: int, low: int, where: str, high: int | None = None) -> int:
    value = table.get(key, default)
    if type(value) is not int or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UserError(f"{where}: '{key}' must be an integer {bounds}, got {value!r}")
    return value


def _parse_param(name: str, table: Any, base: Config, source: str) -> Param:
    where = f"{source}: [space.{name}]"
    if name not in FIELD_TYPES:
        raise UserError(f"{where}: '{name}' is not a config key; known keys: {', '.join(FIELD_TYPES)}")
    if name in NOT_TUNABLE:
        raise UserError(f"{where}: '{name}' cannot be searched (not tunable: {', '.join(NOT_TUNABLE)}); "
                        "set it in [base] instead")
    if not isinstance(table, dict):
        raise UserError(f"{where}: must be a table with a 'type' (float, int or categorical)")
    kind = table.get("type")
    if kind not in PARAM_KEYS:
        raise UserError(f"{where}: 'type' must be float, int or categorical, got {kind!r}")
    _reject_unknown(table, PARAM_KEYS[kind], where)
    field = FIELD_TYPES[name]
    if kind == "categorical":
        choices = table.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: 'choices' must be a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            raise UserError(f"{where}: 'choices' lists a value twice: {choices}")
        for choice in choices:
            resolve(base, {name: choice}, source=where)
        return Param(name, kind, choices=tuple(choices))
    if (kind == "float") != (field is float) or (kind == "int" and field is not int):
        raise UserError(f"{where}: '{name}' is {field.__name__} in the config; use type = "
                        f"\"{'float' if field is float else 'int' if field is int else 'categorical'}\"")
    number = float if kind == "float" else int
    low, high = table.get("low"), table.get("high")
    if kind == "float":
        low, high = (float(v) if type(v) is int else v for v in (low, high))
    if type(low) is not number or type(high) is not number or not low < high:
        raise UserError(f"{where}: needs {kind} 'low' < 'high', got low = {low!r}, high = {high!r}")
    for value in (low, high):
        resolve(base, {name: value}, source=where)
    log = table.get("log", False)
    if type(log) is not bool:
        raise UserError(f"{where}: 'log' must be true or false, got {log!r}")
    step = table.get("step")
    if step is not None:
        if kind == "float" and type(step) is int:
            step = float(step)
        if type(step) is not number or step <= 0:
            raise UserError(f"{where}: 'step' must be a positive {kind}, got {step!r}")
        if log and (kind == "float" or step != 1):
            raise UserError(f"{where}: 'step' and log = true cannot be combined; drop one")
        # Optuna lowers 'high' to the last multiple of step above 'low', with a warning only: say so here
        count = (high - low) / step
        if step > high - low or abs(count - round(count)) > 1e-9 * max(1.0, count):
            last = low + math.floor(count + 1e-9) * step
            raise UserError(f"{where}: high - low = {high - low:g} is not a multiple of step {step:g}, and Optuna "
                            f"would search [{low:g}, {last:g}] only; make high {last:g} or a multiple of step above low")
    if log and low <= 0:
        raise UserError(f"{where}: log = true needs low > 0, got {low}")
    return Param(name, kind, low, high, log, step)


def _check_corners(base: Config, space: tuple[Param, ...], source: str,
                   check: Callable[[Config], object] = check_combination) -> None:
    """`check` the config at every combination of bounds and choices: a rule between keys (replicas and dropout,
    say) that some trial would break fails here, before any trial runs."""
    combinations = itertools.product(*(param.corners() for param in space))
    for values in itertools.islice(combinations, MAX_CORNERS):
        changes = dict(zip((param.name for param in space), values))
        try:
            check(check_combination(resolve(base, changes, source=source)))
        except UserError as error:
            raise UserError(f"{source}: the search space reaches a config that cannot train, at "
                            f"{', '.join(f'{k} = {v}' for k, v in changes.items())}: {error}") from None


def _check_corner_models(spec: TuneSpec, num_classes: int, image_size: tuple[int, int]) -> None:
    """What `fit` refuses before a trial's directory (a model that takes no such crop, precise BN on a net with no
    BatchNorm, a device this machine lacks), at every corner of the space, before the search writes anything: it
    was a failed first trial, Optuna's traceback, and an optuna.db. Each distinct model recipe is built once."""
    from mnist_ops.models import MODEL_KEYS
    from mnist_ops.train import check_runnable

    built = set()

    def check(config: Config) -> None:
        keys = (*MODEL_KEYS, "preset", "model", "train_crop", "device", "replicas", "fast_dropout")
        recipe = tuple(getattr(config, key) for key in keys) + (config.precise_bn > 0,)
        if recipe not in built:
            check_runnable(config, num_classes, image_size)
            built.add(recipe)

    _check_corners(spec.base, spec.space, f"tune spec '{spec.name}'", check)


def parse_tune_spec(values: dict, source: str, trials: int | None = None) -> TuneSpec:
    """Validate a whole tune spec; every mistake is a UserError naming it. `trials` replaces the spec's."""
    from mnist_ops.models import resolve_model
    from mnist_ops.presets import get_preset
    from mnist_ops.study import spec_name

    _reject_unknown(values, TUNE_KEYS, source)
    name = spec_name(values, source)
    preset = values.get("preset")
    if not isinstance(preset, str):
        raise UserError(f"{source}: needs 'preset', the base recipe (see `mnist-ops list`), got {show(preset)}")
    base = get_preset(preset, where=source)
    base_keys = _table(values, "base", source)
    if "validation" in base_keys:
        raise UserError(f"{source}: set the validation split with the top-level 'validation', not in [base]")
    base = resolve(base, base_keys, source=f"{source}: [base]")
    validation = _integer(values, "validation", DEFAULT_VALIDATION, 1, source)
    base = base.replace(validation=validation)
    try:
        resolve_model(base.model)  # a registered name, or your own net (path/to/nets.py:Net), as train takes
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    space_table = _table(values, "space", source)
    if not space_table:
        raise UserError(f"{source}: needs a search space: at least one [space.KEY] table with a type")
    space = tuple(_parse_param(key, table, base, source) for key, table in space_table.items())
    _check_corners(base, space, source)

    sampler = _table(values, "sampler", source)
    _reject_unknown(sampler, ("kind", "seed", "startup_trials"), f"{source}: [sampler]")
    sampler_kind = sampler.get("kind", "tpe")
    if sampler_kind not in SAMPLERS:
        raise UserError(f"{source}: [sampler] 'kind' must be one of {', '.join(SAMPLERS)}, got {sampler_kind!r}")
    pruner = _table(values, "pruner", source)
    _reject_unknown(pruner, ("kind", "warmup_epochs"), f"{source}: [pruner]")
    pruner_kind = pruner.get("kind", "median")
    if pruner_kind not in PRUNERS:
        raise UserError(f"{source}: [pruner] 'kind' must be one of {', '.join(PRUNERS)}, got {pruner_kind!r}")
    objective = _table(values, "objective", source)
    _reject_unknown(objective, ("last_k", "seeds", "score"), f"{source}: [objective]")
    score = objective.get("score", "mean")
    if score not in SCORES:
        raise UserError(f"{source}: [objective] 'score' must be one of {', '.join(SCORES)}, got {score!r}")
    last_k = _integer(objective, "last_k", 3, 1, f"{source}: [objective]")
    seeds = _integer(objective, "seeds", 1, 1, f"{source}: [objective]")
    if seeds > MAX_SEEDS_PER_TRIAL:
        raise UserError(f"{source}: [objective] seeds = {seeds}: at most {MAX_SEEDS_PER_TRIAL} seeds per trial")
    max_epochs = max([base.epochs] + [value for param in space if param.name == "epochs" for value in param.corners()])
    if last_k > max_epochs:
        raise UserError(f"{source}: [objective] last_k = {last_k} is more than the epochs trained ({max_epochs})")
    count = trials if trials is not None else values.get("trials", 20)
    if type(count) is not int or count < 1:
        raise UserError(f"{source}: 'trials' (or --trials) must be an integer >= 1, got {count!r}")
    sampler_seed = _integer(sampler, "seed", 0, 0, f"{source}: [sampler]", MAX_SAMPLER_SEED)
    return TuneSpec(name, base, space, count, sampler_kind, sampler_seed,
                    _integer(sampler, "startup_trials", 10, 0, f"{source}: [sampler]"), pruner_kind,
                    _integer(pruner, "warmup_epochs", 1, 0, f"{source}: [pruner]"), last_k, seeds, score)


def read_tune_spec(path: str | os.PathLike, trials: int | None = None) -> TuneSpec:
    return parse_tune_spec(read_toml(path), str(path), trials)


def tune_spec_to_toml(spec: TuneSpec) -> str:
    """The resolved spec: every base config key, readable back by `read_tune_spec`."""
    base = {key: value for key, value in spec.base.to_dict().items() if key not in ("preset", "validation")}
    text = to_toml({"name": spec.name, "preset": spec.base.preset, "trials": spec.trials,
                    "validation": spec.base.validation})
    text += "\n[base]\n" + to_toml(base)
    text += "\n[sampler]\n" + to_toml({"kind": spec.sampler, "seed": spec.sampler_seed,
                                        "startup_trials": spec.startup_trials})
    text += "\n[pruner]\n" + to_toml({"kind": spec.pruner, "warmup_epochs": spec.warmup_epochs})
    # `seeds` and `score` only when not their defaults: an older spec reads as it did before the keys existed
    text += "\n[objective]\n" + to_toml({"last_k": spec.last_k, **({"seeds": spec.seeds} if spec.seeds > 1 else {}),
                                          **({"score": spec.score} if spec.score != "mean" else {})})
    for param in spec.space:
        text += f"\n[space.{param.name}]\n" + to_toml({"type": param.kind})
        if param.kind == "categorical":
            text += f"choices = {json.dumps(list(param.choices))}\n"  # a JSON array of these is TOML
        else:
            text += to_toml({"low": param.low, "high": param.high, "log": param.log})
            if param.step is not None:
                text += to_toml({"step": param.step})
    return text


# ---------------------------------------------------------------------------- Optuna pieces

def make_sampler(spec: TuneSpec, worker_seed_offset: int, parallel: bool):
    """TPE (seeded) or random. Each worker gets its own seed, or parallel workers would draw the same
    start-up trials; with several workers TPE uses the constant liar for trials still running."""
    import optuna

    # the offsets (workers, hosts, runs again) can carry a seed near the top past numpy's range: wrap it round
    seed = (spec.sampler_seed + worker_seed_offset) % (MAX_SAMPLER_SEED + 1)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials, constant_liar=parallel)


def make_pruner(spec: TuneSpec):
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=spec.warmup_epochs)
    if spec.pruner == "hyperband":
        max_epochs = max([spec.base.epochs] + [v for p in spec.space if p.name == "epochs" for v in p.corners()])
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def scored(values: list[float], score: str = "mean") -> float:
    """Several accuracies as one number: their mean, or with score "worst" their minimum, as a record is
    judged ("held in each of the last K epochs, on every seed")."""
    return min(values) if score == "worst" else sum(values) / len(values)


def objective_value(records: list[dict], last_k: int, score: str = "mean") -> float:
    """Validation accuracy over the last K epochs (all epochs if fewer were trained), `scored`."""
    return scored([record["val_accuracy"] for record in records[-last_k:]], score)


class SurplusTrial(Exception):
    """Two workers started a trial at the same moment when one slot of the budget was left."""


def budget_position(study, trial_number: int) -> int:
    """1-based place of this trial among the trials that take a slot of the budget (every state but
    FAIL), in creation order. Trial numbers are assigned under a lock, so every lower-numbered trial
    exists already; a place > `trials` means the budget was full when this trial was created."""
    from optuna.trial import TrialState

    return sum(1 for trial in study.get_trials(deepcopy=False)
               if trial.number <= trial_number and trial.state != TrialState.FAIL)


@dataclass
class TuneWorker:
    """One worker's side of a search: run trials until `trials` have ended COMPLETE or PRUNED."""
    spec: TuneSpec
    url: str
    study_name: str
    out: Path
    data_root: str | None
    heartbeat: int
    log: Callable[[str], None]
    seed_offset: int
    parallel: bool
    current_trial: int | None = None
    stopped_by: KeyboardInterrupt | None = None  # Ctrl+C or SIGTERM, kept should Optuna raise another error for it

    def objective(self, trial) -> float:
        import optuna

        from mnist_ops.distributed import beat_now
        from mnist_ops.train import fit

        self.current_trial = trial.number  # queued again if Ctrl+C or SIGTERM stops it (run)
        beat_now(trial)
        trial.set_user_attr("worker", worker_name())
        if trial.user_attrs.get("interrupted"):  # a copy of an interrupted trial: this run of it was not (yet)
            trial.set_user_attr("interrupted", False)
        if budget_position(trial.study, trial.number) > self.spec.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} started after the budget of {self.spec.trials} was taken")
        params = {param.name: param.suggest(trial) for param in self.spec.space}
        config = check_combination(resolve(self.spec.base, params, source=f"trial {trial.number}"))
        seeds = [config.seed + index for index in range(self.spec.seeds)]
        trial_dir = self.out / TRIALS_DIR / f"trial{trial.number:04d}"
        epochs_trained = 0

        shown = ", ".join(f"{key} = {value:.4g}" if isinstance(value, float) else f"{key} = {value}"
                          for key, value in params.items())
        self.log(f"trial {trial.number}: {shown}")
        started = time.perf_counter()
        values = []
        try:
            for seed in seeds:
                records: list[dict] = []

                # The pruner judges a trial on its first seed, epoch by epoch; the other seeds run whole.
                def on_epoch(epoch: int, record: dict, records=records, first=seed == seeds[0]) -> None:
                    records.append(record)
                    if first:
                        trial.report(record["val_accuracy"], epoch)
                        if trial.should_prune():
                            raise optuna.TrialPruned(f"validation accuracy {record['val_accuracy']:.2f}% "
                                                     f"after epoch {epoch}")

                try:
                    fit(config.replace(seed=seed), trial_dir if len(seeds) == 1 else trial_dir / f"seed{seed}",
                        data_root=self.data_root, log=lambda message: None, progress=False, on_epoch=on_epoch)
                finally:
                    epochs_trained += len(records)
                values.append(objective_value(records, self.spec.last_k, self.spec.score))
        except optuna.TrialPruned as pruned:
            self.log(f"trial {trial.number}: pruned, {pruned} ({time.perf_counter() - started:.0f} s)")
            raise
        except TrainingDiverged as diverged:  # a recipe this search should learn to avoid, not a crash
            trial.set_user_attr("diverged", str(diverged))
            self.log(f"trial {trial.number}: pruned, the loss diverged ({diverged})")
            raise optuna.TrialPruned(f"diverged: {diverged}") from None
        except KeyboardInterrupt as stop:  # Ctrl+C or SIGTERM: queued again by run (the report says why it ran twice)
            self.stopped_by = stop
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # declared dead meanwhile
                trial.set_user_attr("interrupted", True)
            raise
        finally:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # declared dead: not ours now
                trial.set_user_attr("epochs_trained", epochs_trained)
                trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        value = scored(values, self.spec.score)  # the seeds' values as one, the same way
        over = f"the last {min(self.spec.last_k, config.epochs)} epochs"
        if len(seeds) > 1:
            trial.set_user_attr("seed_values", dict(zip(map(str, seeds), values)))
            over += f" of seeds {', '.join(map(str, seeds))} ({', '.join(f'{v:.2f}' for v in values)})"
        self.log(f"trial {trial.number}: {value:.2f}% {SCORE_WORDS[self.spec.score]} validation accuracy over {over} "
                 f"({time.perf_counter() - started:.0f} s)")
        return value

    def run(self) -> None:
        import optuna

        from mnist_ops.distributed import (DeadTrials, open_storage, optimize_one, poll_seconds, requeue_interrupted,
                                           trial_counts)

        storage = open_storage(self.url, self.heartbeat, retry_stale=3)
        dead = DeadTrials(storage, self.heartbeat)
        study = optuna.load_study(study_name=self.study_name, storage=storage,
                                  sampler=make_sampler(self.spec, self.seed_offset, self.parallel),
                                  pruner=make_pruner(self.spec))
        while True:
            dead.judge_by_the_longest(study)
            counts = trial_counts(study)
            finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
            if finished >= self.spec.trials:
                return
            in_flight = counts.get("RUNNING", 0) + counts.get("WAITING", 0)
            if finished + in_flight >= self.spec.trials and not counts.get("WAITING"):
                # The rest of the budget runs on other workers; wait in case one of them dies.
                time.sleep(poll_seconds(self.heartbeat))
                dead.sweep(study)
                continue
            # a stopped trial runs again, with its parameters, when the search is resumed
            optimize_one(study, self, lambda number: requeue_interrupted(study, number), "trial", catch=(SurplusTrial,))


def _run_tune_worker(index: int, worker: TuneWorker, workers: int) -> None:
    from mnist_ops.distributed import flushed_print, prefixed

    worker.log = prefixed(flushed_print, index, workers)
    worker.seed_offset += index
    try:
        worker.run()
    except UserError as error:
        worker.log(f"error: {error}")
        raise SystemExit(2) from None


# ---------------------------------------------------------------------------- the search

def check_tune_dir(spec: TuneSpec, out: Path) -> None:
    """The directory is new, empty, or holds this spec (the trial count may change)."""
    existing = out / "spec.toml"
    if existing.is_file():
        if "variant" in read_toml(existing):  # what `mnist-ops study` writes; a tune spec has a search space
            raise UserError(f"{out} holds a study's spec.toml (a study directory); pass another --out")
        old = read_recorded_tune_spec(existing)
        if tune_spec_to_toml(dataclasses.replace(old, trials=spec.trials)) != tune_spec_to_toml(spec):
            raise UserError(f"{out} was written by a different tune spec; pass another --out or delete it")
    elif out.is_dir() and any(path.name != "optuna.db" for path in out.iterdir()):  # a start that failed early
        raise UserError(f"{out} is not empty and holds no spec.toml; pass another --out or delete it")


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, absolute; None for another database, a URL that does not parse (opening it
    says so in one line), memory, or a file: URI (SQLite's to read)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") or \
            parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).resolve()


def _storage_identity(storage: str | None, url: str, file: Path | None, out: Path) -> str:
    """How a tune directory records its storage: "embedded" (its own optuna.db, named or not, wherever the directory
    moves), or the URL without its password, a SQLite file (`file`: _sqlite_file of the URL) by its absolute path
    (sqlite:///shared.db names another file from another working directory)."""
    from mnist_ops.distributed import EMBEDDED_FILE, describe_url

    if storage is None or file == (out / EMBEDDED_FILE).resolve():
        return "embedded"
    return describe_url(f"sqlite:///{file}" if file is not None else url)


def _storage_words(identity: str) -> str:
    return "its own optuna.db" if identity == "embedded" else identity


def check_tune_storage(out: Path, storage: str | None, url: str, study_name: str) -> dict:
    """The directory's record of where its search is ({"storage": _storage_identity, "study_name": ...}), refused
    when this command names another storage or study: the search there would start afresh and its trial numbers meet
    the directory's (an Optuna traceback, then "already holds a run"; a review). A directory from before the record:
    refused if it holds trials and the storage has no study of that name (looked up without creating a database)."""
    from mnist_ops.distributed import open_storage

    file = _sqlite_file(url)
    where = {"storage": _storage_identity(storage, url, file, out), "study_name": study_name}
    path = out / STORAGE_RECORD
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        if not (isinstance(saved, dict) and isinstance(saved.get("storage"), str)
                and isinstance(saved.get("study_name"), str)):
            raise UserError(f"{path} is damaged; restore it, or pass another --out")
        if saved != where:
            how = ("with no --storage" if saved["storage"] == "embedded"
                   else f"with --storage on that database ({saved['storage']})")
            raise UserError(f"{out} holds the trials of study '{saved['study_name']}' in "
                            f"{_storage_words(saved['storage'])}, not of '{study_name}' in "
                            f"{_storage_words(where['storage'])}; run it {how} and --study-name {saved['study_name']}, "
                            "or pass another --out")
    elif (out / TRIALS_DIR).is_dir() and any((out / TRIALS_DIR).iterdir()):
        import optuna

        if file is None and url.startswith("sqlite"):  # a file: URI, or no URL: create_study opens it, or says why not
            return where
        if (file is not None and not file.is_file()) or \
                study_name not in optuna.get_all_study_names(storage=open_storage(url)):
            raise UserError(f"{out} holds trials, and {_storage_words(where['storage'])} has no study '{study_name}': "
                            "pass the --storage and --study-name the search ran with, or another --out")
    return where


def create_study(spec: TuneSpec, url: str, study_name: str):
    """Create the study (or load it: another machine made it, or a resume), once, before any worker
    starts. Its creator stores the spec in the study: a machine with a different spec is refused."""
    import optuna

    from mnist_ops.distributed import open_storage

    storage = open_storage(url)
    text = tune_spec_to_toml(dataclasses.replace(spec, trials=1))  # machines may ask for different counts
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
        study.set_user_attr("spec", text)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage)
    deadline = time.monotonic() + 60
    while "spec" not in study.user_attrs and time.monotonic() < deadline:  # its creator is storing it
        time.sleep(0.5)
    if "[[variant]]" in study.user_attrs.get("spec", ""):  # what `mnist-ops study --storage` stores
        raise UserError(f"study '{study_name}' in the storage is a `mnist-ops study` (of variants and seeds), not a "
                        "tune search; pass another --study-name")
    if "spec" not in study.user_attrs or tune_spec_from_text(study.user_attrs["spec"], study_name) != \
            dataclasses.replace(spec, trials=1):
        raise UserError(f"study '{study_name}' in the storage was made by a different tune spec; "
                        "pass another --study-name, or the spec it was made with")
    return study


def tune_spec_from_text(text: str, study_name: str) -> TuneSpec:
    """A tune spec stored by tune_spec_to_toml, maybe by older code: compared parsed, not as text."""
    return _stored_tune_spec(tomllib.loads(text), f"study '{study_name}' in the storage")


def read_recorded_tune_spec(path: str | os.PathLike) -> TuneSpec:
    """A tune directory's spec.toml (tune_spec_to_toml), maybe written by older code: a key Config gained since
    takes its default, which that code ran with, not the value its preset has today."""
    return _stored_tune_spec(read_toml(path), str(path))


def _stored_tune_spec(values: dict, source: str) -> TuneSpec:
    base = values.get("base", {})
    if isinstance(base, dict):  # anything else: parse_tune_spec names the problem
        values["base"] = stored_table(base, skip={"preset", "validation"})
    return parse_tune_spec(values, source)


def best_config(study, spec: TuneSpec) -> tuple[Config, Any]:
    """The best trial's config, for training without the validation split: validation off, test set on."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UserError(f"study '{study.study_name}' has no completed trial yet (all pruned or failed); "
                        "run more trials or loosen the pruner")
    trial = study.best_trial
    config = resolve(spec.base, trial.params, source=f"trial {trial.number}")
    return config.replace(validation=0, validation_from="random"), trial


def write_best_config(path: Path, config: Config, trial, command: str, score: str = "mean") -> None:
    header = (f"# Best trial {trial.number}: {trial.value:.4f}% {SCORE_WORDS[score]} validation accuracy\n"
              f"# from: {command}\n# train it: mnist-ops train --config {shlex.quote(str(path))}\n")  # as run from there
    atomic_write_bytes(path, (header + to_toml(config.to_dict())).encode())


def run_tune(spec: TuneSpec, out: str | os.PathLike, storage: str | None = None, study_name: str | None = None,
             workers: int = 1, data_root=None, heartbeat: int | None = None, command: str = "",
             log: Callable[[str], None] | None = None) -> Path:
    """Run the search until `spec.trials` trials ended COMPLETE or PRUNED; write best.toml. Returns out."""
    from mnist_ops.batches import stratified_holdout
    from mnist_ops.data import dataset_info, load_split
    from mnist_ops.distill import checked_teachers
    from mnist_ops.distributed import (HEARTBEAT_SECONDS, describe_counts, describe_url, flushed_print,
                                       record_heartbeat, require_optuna, storage_url, trial_counts)

    require_optuna()
    log = log or flushed_print
    out = Path(out)
    # missing data, or a validation split as large as the training set, fails here, before anything is written
    train = load_split(spec.base.dataset, "train", data_root)
    stratified_holdout(train.labels, spec.base.validation)
    checked_teachers(spec.base)  # and so does a teacher that cannot teach the trials
    _check_corner_models(spec, len(dataset_info(spec.base.dataset).classes), tuple(train.images.shape[1:]))
    check_tune_dir(spec, out)
    url = storage_url(storage, out)
    name = study_name or spec.name
    where = check_tune_storage(out, storage, url, name)
    study = create_study(spec, url, name)  # a bad --storage fails here, before spec.toml is written
    record_heartbeat(study, heartbeat)  # every worker on the search sweeps by the longest (DeadTrials)
    atomic_write_bytes(out / "spec.toml", tune_spec_to_toml(spec).encode())
    atomic_write_json(out / STORAGE_RECORD, where)
    parallel = workers > 1 or storage is not None
    # On a shared storage each command's workers draw different seeds; alone, the first run uses the spec's seed.
    offset = zlib.crc32(worker_name().encode()) % 100_000 if storage else 0
    # A search run again goes on with new draws: with the first run's seeds, its random start-up
    # trials would repeat the first run's parameters one for one (seen here: trials 8, 9 = 0, 1).
    offset += 1000 * len(study.trials)
    worker = TuneWorker(spec, url, name, out, data_root, heartbeat or HEARTBEAT_SECONDS, log, offset, parallel)
    log(f"tune {spec.name}: study '{name}' in {describe_url(url)}, {spec.trials} trials, {workers} worker(s), "
        f"{describe_counts(trial_counts(study))} so far")
    started = time.perf_counter()
    if workers == 1:
        worker.run()
    else:
        from mnist_ops.distributed import run_workers

        run_workers(workers, _run_tune_worker, (worker, workers), log=log)
    counts = trial_counts(study)
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    log(f"tune {spec.name}: {describe_counts(counts)} after {time.perf_counter() - started:.0f} s")
    if finished < spec.trials:
        raise UserError(f"only {finished} of {spec.trials} trials finished (the workers stopped: see above); "
                        "run the same command again to go on")
    config, trial = best_config(study, spec)
    write_best_config(out / BEST_CONFIG, config, trial, command, spec.score)
    params = ", ".join(f"{key} = {value}" for key, value in trial.params.items())
    log(f"best: trial {trial.number}, {trial.value:.2f}% {SCORE_WORDS[spec.score]} validation accuracy: {params}; "
        f"wrote {out / BEST_CONFIG}")
    return out


def stale_confirm(out: Path, spec: TuneSpec) -> str | None:
    """How the recipe `confirm/` tested differs from best.toml's now ("lr 0.0519 -> 0.0514"): the search went on
    after it confirmed, and found a better trial. None when they agree, or nothing was confirmed."""
    from mnist_ops.config import changed_keys
    from mnist_ops.study import read_recorded_spec

    tested_spec = out / CONFIRM_DIR / "spec.toml"
    if not tested_spec.is_file():
        return None
    tested = read_recorded_spec(tested_spec).variants[0].config.to_dict()
    best = confirm_spec(out, spec, 1).variants[0].config.to_dict()
    changed = [f"{key} {tested[key]!r} -> {best[key]!r}" for key in changed_keys(tested, best)]
    return ", ".join(changed) or None


def confirm_spec(out: Path, spec: TuneSpec, seeds: int):
    """A study of the best config (best.toml) over seeds 1..N, without the validation split, on the test set."""
    from mnist_ops.presets import build_config
    from mnist_ops.study import parse_spec

    config = build_config(None, out / BEST_CONFIG)
    keys = {key: value for key, value in config.to_dict().items() if key not in ("preset", "seed")}
    return parse_spec({"name": f"{spec.name}-confirm", "seeds": seeds, "target_accuracy": config.target_accuracy,
                       "last_k": spec.last_k, "variant": [{"name": "best", "preset": config.preset, **keys}]},
                      str(out / BEST_CONFIG))
