"""Studies: a grid of variants x seeds, trained one run after another, resumable.

A spec names variants (each a preset plus overrides of config keys) and seeds. The whole
spec is validated before anything runs. Each run goes into `<study>/<variant>/seed<N>/`
and is finished once `done.json` sits beside its metrics; a restart skips finished runs
and resumes unfinished ones from their last.pt (`fit(resume=True)`). The resolved spec is kept
as `spec.toml`. A study grows: rerun it with more seeds or added variants and only the new
runs train; a changed recipe for an existing variant is refused by key name rather than mixed
in. The spec format is documented in docs/studies.md.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mnist_ops.config import RANGES, Config, changed_keys, check_combination, resolve, show_key, stored_table, to_toml
from mnist_ops.distributed import EMBEDDED_FILE, worker_name
from mnist_ops.errors import TrainingDiverged, UserError, did_you_mean, show
from mnist_ops.fileio import (DirectoryLock, atomic_write_bytes, atomic_write_json, read_jsonl, read_toml,
                              tomllib)  # tomllib: or tomli on Python 3.10
from mnist_ops.provenance import ENVIRONMENT_FILE

SPEC_FILE = "spec.toml"
STUDY_FILE = "study.json"  # command, machine, train size, per-invocation wall time (interrupted ones too)
DONE_FILE = "done.json"  # written after fit() returned: the run is finished
DIVERGED_FILE = "diverged.json"  # written when fit() raised TrainingDiverged: finished too, and not retried
PREDICTIONS_FILE = "test_predictions.json"  # runs of a study on a storage: last.pt's class for each test image
SPEC_KEYS = ("name", "seeds", "defaults", "target_accuracy", "last_k", "variant")
# study and variant names: directory names (fullmatch), at most 200 characters: a file system takes 255 bytes a name,
# and a study's own names add to it ("NAME-confirm"); a longer one passed, and the study failed at its first
# done.json with its spec already written (a review)
VARIANT_NAME = re.compile(r"[A-Za-z0-9+_-][A-Za-z0-9+._-]{0,199}")
# What a study writes beside its variants' directories (the report, its figures, the embedded storage and SQLite's
# files beside it): a variant of one of these names would fail only when that file is written, after training
STUDY_DIR_FILES = (SPEC_FILE, STUDY_FILE, "report.md", "index.html", "test_accuracy.png", "gap.png", "confusion.png",
                   "misclassified.png", EMBEDDED_FILE, *(EMBEDDED_FILE + end for end in ("-journal", "-wal", "-shm")))
MAX_SEEDS = 10_000

# The built-in `regularization` study: what BatchNorm, Dropout and augmentation each buy the
# 7,758-parameter lean net. The seed-lean preset's recipe (constant lr 0.015, batch 128, 15
# epochs) is slow for this net; onecycle at lr 0.05 with batch 64 gets it near 99.4% in a few
# epochs (one epoch on 10k images at batch 32 already reaches 97.4%). Dropout stays at the preset's
# 0.05. The `plain` rung keeps the same recipe; its model uses He init (see models.py), without
# which this net without BatchNorm stays at chance at these learning rates.
# Budget: 12 runs in <= 30 minutes on 2 idle CPU cores. One epoch over the 60k train images is
# 60,000 / 3,500 img/s = 17 s with augmentation and 60,000 / 5,000 = 12 s without, plus 1.5 s of
# testing; 6 epochs x (3 runs x 18.6 s + 9 runs x 13.5 s) = 18 minutes, plus a few seconds of
# setup per run: room for a machine that is somewhat busy. (On a machine shared with two other
# training jobs we measured 100 and 186 img/s: under such load no epoch count fits 30 minutes.)
REGULARIZATION_EPOCHS = 6
REGULARIZATION = {
    "name": "regularization",
    "seeds": 3,
    "target_accuracy": 99.4,
    "last_k": 3,
    "defaults": {"schedule": "onecycle", "lr": 0.05, "batch_size": 64, "epochs": REGULARIZATION_EPOCHS,
                 "dropout": 0.05},
    "variant": [
        {"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain", "augment": "none"},
        {"name": "+batchnorm", "preset": "seed-lean", "model": "seed-lean-bn", "augment": "none"},
        {"name": "+batchnorm+dropout", "preset": "seed-lean", "model": "seed-lean", "augment": "none"},
        {"name": "+batchnorm+dropout+augmentation", "preset": "seed-lean", "model": "seed-lean",
         "augment": "seed"},
    ],
}
BUILT_IN = {"regularization": REGULARIZATION}


@dataclass(frozen=True)
class Variant:
    name: str
    config: Config  # the seed is set per run


@dataclass(frozen=True)
class Spec:
    name: str
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    target_accuracy: float
    last_k: int


# ---------------------------------------------------------------------------- parsing

def _parse_seeds(value: Any, source: str) -> tuple[int, ...]:
    lowest, highest = RANGES["seed"]
    if type(value) is int:  # a count; bool is not an int here
        if not 1 <= value <= MAX_SEEDS:
            raise UserError(f"{source}: 'seeds' must be a count in [1, {MAX_SEEDS}] or a list of seeds, "
                            f"got {show(value)}")
        return tuple(range(1, value + 1))
    if (isinstance(value, list) and 1 <= len(value) <= MAX_SEEDS
            and all(type(seed) is int and lowest <= seed <= highest for seed in value)):
        if len(set(value)) != len(value):
            raise UserError(f"{source}: 'seeds' lists a seed twice: {show(value)}")
        return tuple(value)
    raise UserError(f"{source}: 'seeds' must be a count in [1, {MAX_SEEDS}] or a list of 1 to {MAX_SEEDS} seeds "
                    f"in [{lowest}, {highest}], got {show(value)}")


def _parse_number(values: dict, key: str, default: Any, kind: type, low: float, high: float, source: str):
    value = values.get(key, default)
    is_number = type(value) is kind or (kind is float and type(value) is int)  # bool is not an int here
    if not is_number or not low <= value <= high:  # compared before converting: a huge int stays an int
        kind_name = {"int": "an integer", "float": "a number"}.get(kind.__name__, kind.__name__)
        raise UserError(f"{source}: '{key}' must be {kind_name} in [{low}, {high}], got {show(value)}")
    return kind(value)


def _parse_variant(table: Any, defaults: dict, overrides: dict, source: str) -> Variant:
    from mnist_ops.models import resolve_model
    from mnist_ops.presets import get_preset

    if not isinstance(table, dict):
        raise UserError(f"{source}: each [[variant]] must be a table, got {show(table)}")
    keys = dict(table)
    name = keys.pop("name", None)
    if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
        raise UserError(f"{source}: a variant needs a 'name' of at most 200 letters, digits, '+', '-', '_' or '.', "
                        f"got {show(name)}")
    if name in STUDY_DIR_FILES:
        raise UserError(f"{source}: variant name '{name}' is a file the study writes beside the variants' directories "
                        f"({', '.join(STUDY_DIR_FILES)}); rename the variant")
    where = f"{source}: variant '{name}'"
    preset = keys.pop("preset", None)
    if not isinstance(preset, str):
        raise UserError(f"{where}: needs a 'preset' name, got {show(preset)}")
    config = get_preset(preset, where=where)
    config = resolve(config, defaults, source=f"{source}: [defaults]")
    config = resolve(config, keys, source=where)
    config = resolve(config, overrides, source="command line")
    try:
        check_combination(config)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    if config.validation:  # a study's report, records and Optuna values all read the test set
        raise UserError(f"{where}: sets validation = {config.validation}, but a study judges every run on the test "
                        f"set; compare recipes on a validation split with `mnist-ops tune` (its [objective] seeds "
                        f"= N scores each trial over N seeds) or `mnist-ops train --validation N`")
    try:
        resolve_model(config.model)  # imports a model file or module the variant names, before any run
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    return Variant(name, config)


def spec_name(values: dict, source: str) -> str:
    """A spec's `name` (default: the file's stem), usable as a directory name; study and tune specs."""
    name = values.get("name", Path(source).stem)
    if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):  # fullmatch: no trailing newline
        raise UserError(f"{source}: 'name' must be at most 200 letters, digits, '+', '-', '_' or '.', "
                        f"got {show(name)}")
    return name


def parse_spec(values: dict, source: str, seeds: int | None = None, overrides: dict | None = None) -> Spec:
    """Validate a whole spec (a dict read from TOML); every mistake is a UserError naming it.

    `seeds` (a count) replaces the spec's seeds; `overrides` (config keys) apply to every variant last. A last_k
    above a variant's epochs judges that variant on all its epochs (a quick check with --epochs 1, a short
    baseline), as its report says.
    """
    unknown = sorted((key for key in values if key not in SPEC_KEYS), key=str)
    if {"space", "base"} & set(unknown):  # what `mnist-ops tune` writes: its spec.toml, or the file given to it
        raise UserError(f"{source} is a tune spec (it has [base] and [space]), not a study spec; use it with "
                        "`mnist-ops tune --spec`, and its confirm/ directory with `mnist-ops study report`")
    if unknown:
        named = ", ".join(show_key(key) + did_you_mean(key, SPEC_KEYS) for key in unknown)
        raise UserError(f"{source}: unknown key(s) {named}; known keys: {', '.join(SPEC_KEYS)}")
    name = spec_name(values, source)
    defaults = values.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UserError(f"{source}: [defaults] must be a table of config keys, got {show(defaults)}")
    if "seed" in defaults:
        raise UserError(f"{source}: [defaults] sets 'seed'; list seeds in the top-level 'seeds' instead")
    for layer, label in ((defaults, "[defaults]"), (overrides or {}, "the command line")):
        if "preset" in layer:  # it would relabel every variant with a name read_spec cannot resolve
            raise UserError(f"{source}: {label} sets 'preset'; each [[variant]] names its own preset")
    tables = values.get("variant")
    if not isinstance(tables, list) or not tables:
        raise UserError(f"{source}: needs at least one [[variant]] table with a name and a preset")
    if any(isinstance(table, dict) and "seed" in table for table in tables):
        raise UserError(f"{source}: a variant sets 'seed'; list seeds in the top-level 'seeds' instead")
    variants = tuple(_parse_variant(table, defaults, overrides or {}, source) for table in tables)
    names = [variant.name for variant in variants]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"{source}: variant name(s) used twice: {', '.join(repeated)}")
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:  # the flag's mistake, not the file's
        raise UserError(f"--seeds must be a count in [1, {MAX_SEEDS}], got {seeds}")
    seed_list = _parse_seeds(seeds if seeds is not None else values.get("seeds", 3), source)
    target = _parse_number(values, "target_accuracy", 99.4, float, 0.0, 100.0, source)
    last_k = _parse_number(values, "last_k", 3, int, 1, 10_000, source)
    return Spec(name, variants, seed_list, target, last_k)


def read_spec(path: str | os.PathLike, seeds: int | None = None, overrides: dict | None = None) -> Spec:
    return parse_spec(read_toml(path), str(path), seeds, overrides)


def spec_from_text(text: str, source: str) -> Spec:
    """A spec stored as text (spec_to_toml), maybe by older code (config.stored_table). Compare specs
    parsed, never as text: a stored study outlives a code upgrade."""
    return _stored_spec(tomllib.loads(text), source)


def read_recorded_spec(path: str | os.PathLike) -> Spec:
    """A study directory's spec.toml (spec_to_toml), maybe written by older code: a key Config gained since
    takes its default, which that code ran with, not the value its preset has today."""
    return _stored_spec(read_toml(path), str(path))


def _stored_spec(values: dict, source: str) -> Spec:
    variants = values.get("variant", [])
    if isinstance(variants, list):  # anything else: parse_spec names the problem
        values["variant"] = [stored_table(table, skip={"seed"}, keep={"name"}) if isinstance(table, dict) else table
                             for table in variants]
    return parse_spec(values, source)


def built_in_spec(name: str, seeds: int | None = None, overrides: dict | None = None) -> Spec:
    if name not in BUILT_IN:
        raise UserError(f"unknown built-in study '{name}'{did_you_mean(name, BUILT_IN)}; choose one of: {', '.join(BUILT_IN)}, "
                        "or pass --spec FILE.toml")
    return parse_spec(BUILT_IN[name], f"built-in study '{name}'", seeds, overrides)


def spec_to_toml(spec: Spec) -> str:
    """The resolved spec: every variant with every config key, readable back by `read_spec`."""
    header = to_toml({"name": spec.name, "target_accuracy": spec.target_accuracy, "last_k": spec.last_k})
    header += f"seeds = [{', '.join(str(seed) for seed in spec.seeds)}]\n"
    tables = []
    for variant in spec.variants:
        values = {key: value for key, value in variant.config.to_dict().items() if key != "seed"}
        tables.append("\n[[variant]]\n" + to_toml({"name": variant.name, **values}))
    return header + "".join(tables)


# ---------------------------------------------------------------------------- running

def run_dir(study_dir: str | os.PathLike, variant: str, seed: int) -> Path:
    return Path(study_dir) / variant / f"seed{seed}"


def damaged_file(path: Path, problem: str) -> UserError:
    """A study file that does not read back (a disk filled up, an editor, a copy cut short): its name and the fix."""
    if path.name == STUDY_FILE:  # provenance only: the report reads without it
        fix = "delete it; the report then leaves out the command, machine and wall time it recorded"
    else:  # a run's: without done.json or diverged.json the study takes the run up again, from its last.pt if any
        markers = [path.parent / name for name in (DONE_FILE, DIVERGED_FILE)]
        finished = path if path in markers else next((marker for marker in markers if marker.is_file()), None)
        first = "delete it" if finished == path else f"delete {finished}" if finished else ""
        fix = (f"{first} and run" if first else "run") + (" the study again: it rewrites the run's files from its "
                                                         "last.pt, or trains the run again")
    return UserError(f"{path} is damaged ({problem}); {fix}")


def read_json_object(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """A JSON object a study wrote (done.json, diverged.json, study.json) that holds `keys`; a damaged one
    is a UserError naming it and the fix."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise damaged_file(path, f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise damaged_file(path, f"a JSON {type(value).__name__}, not an object")
    missing = [key for key in keys if key not in value]
    if missing:
        raise damaged_file(path, f"no {', '.join(repr(key) for key in missing)}")
    return value


def read_metrics(path: Path) -> list[dict]:
    """A run's metrics.jsonl (fileio.read_jsonl); a damaged one is a UserError naming it and the fix."""
    try:
        return read_jsonl(path)
    except UnicodeDecodeError as error:
        raise damaged_file(path, f"not text: {error}") from None
    except ValueError as error:  # a line that is not a JSON object
        raise damaged_file(path, str(error)) from None


def done_record(directory: Path, variant: str, seed: int, summary: dict, config: Config) -> dict:
    """done.json: the run's summary and config, and the code, torch and threads it ran with
    (environment.json, which a storage-built study directory would not have)."""
    environment = directory / ENVIRONMENT_FILE
    return {"variant": variant, "seed": seed, "summary": summary, "config": config.to_dict(),
            "environment": json.loads(environment.read_text()) if environment.is_file() else {}}


@dataclass(frozen=True)
class RunStatus:
    label: str  # variant/seedN
    state: str  # done, diverged, running, started, queued, failed, not started
    epochs: int  # epochs finished (metrics.jsonl, or the storage's per-epoch records)
    planned: int
    last_accuracy: float | None  # the last finished epoch's test (or validation) accuracy
    detail: str = ""  # what diverged or failed, or which worker runs it


def last_accuracy(records: list[dict]) -> float | None:
    if not records:
        return None
    return records[-1].get("test_accuracy", records[-1].get("val_accuracy"))


def directory_status(spec: Spec, study_dir: Path) -> list[RunStatus]:
    """Each run's state from the study directory alone (a study trained without --storage)."""
    rows = []
    for variant in spec.variants:
        for seed in spec.seeds:
            directory = run_dir(study_dir, variant.name, seed)
            metrics = directory / "metrics.jsonl"
            records = read_metrics(metrics) if metrics.is_file() else []
            label, planned = f"{variant.name}/seed{seed}", variant.config.epochs
            if (directory / DONE_FILE).is_file():
                read_json_object(directory / DONE_FILE, ("seed", "summary"))  # damaged: named, as `study report` does
                rows.append(RunStatus(label, "done", len(records), planned, last_accuracy(records)))
            elif (directory / DIVERGED_FILE).is_file():
                what = read_json_object(directory / DIVERGED_FILE).get("diverged", "")
                rows.append(RunStatus(label, "diverged", len(records), planned, last_accuracy(records), what))
            elif directory.exists():  # training now, or stopped: the next invocation resumes it
                rows.append(RunStatus(label, "started", len(records), planned, last_accuracy(records)))
            else:
                rows.append(RunStatus(label, "not started", 0, planned, None))
    return rows


def format_status(name: str, rows: list[RunStatus]) -> str:
    counts = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    lines = [f"study {name}: {len(rows)} runs: " + ", ".join(f"{count} {state}" for state, count in counts.items())]
    width = max(len(row.label) for row in rows)
    for row in rows:
        accuracy = "" if row.last_accuracy is None else f", last {row.last_accuracy:.2f}%"
        detail = f"  {row.detail}" if row.detail else ""
        lines.append(f"  {row.label:<{width}}  {row.state:<11}  {row.epochs:>3}/{row.planned} epochs{accuracy}{detail}")
    return "\n".join(lines)


def diverged_record(directory: Path, variant: str, seed: int, config: Config, error: TrainingDiverged) -> dict:
    """diverged.json: a seeded run diverges again when retried, so the study records it and goes on; the
    report lists it, and counts it as a seed that did not hold the target."""
    return {**done_record(directory, variant, seed, {}, config), "diverged": error.what}


def is_finished(directory: Path) -> bool:
    return (directory / DONE_FILE).is_file() or (directory / DIVERGED_FILE).is_file()


def grow_spec(old: Spec, new: Spec, study_dir: Path) -> Spec:
    """The study in `study_dir` (`old`) with the seeds and variants `new` adds. A study grows by seeds
    and variants; a variant whose recipe changed, or another name, target or last_k, is refused by name."""
    for key in ("name", "target_accuracy", "last_k"):
        if getattr(old, key) != getattr(new, key):
            raise UserError(f"{study_dir} holds study {key} = {getattr(old, key)!r}, this spec has "
                            f"{getattr(new, key)!r}; pass another --out, or keep {key}")
    recorded = {variant.name: variant for variant in old.variants}
    changes = []
    for variant in new.variants:
        before = recorded.get(variant.name)
        if before is not None and before.config != variant.config:
            old_values, new_values = before.config.to_dict(), variant.config.to_dict()
            keys = [f"{key} {old_values[key]!r} -> {new_values[key]!r}" for key in changed_keys(old_values, new_values)]
            if keys:
                changes.append(f"variant '{variant.name}' changes {', '.join(keys)}")
    if changes:
        raise UserError(f"{study_dir} holds runs of another recipe: {'; '.join(changes)}. A study grows by "
                        "seeds and variants only: give the changed recipe a new variant name, or pass another --out")
    variants = old.variants + tuple(variant for variant in new.variants if variant.name not in recorded)
    seeds = old.seeds + tuple(seed for seed in new.seeds if seed not in old.seeds)
    return Spec(old.name, variants, seeds, old.target_accuracy, old.last_k)


def claim_study_dir(spec: Spec, study_dir: Path, log: Callable[[str], None] = print, write: bool = True) -> Spec:
    """Write spec.toml, or grow the one already there by this spec's new seeds and variants.
    Returns the study's whole spec (what the report covers). `write=False`: only refuse what would be refused."""
    existing = study_dir / SPEC_FILE
    if existing.is_file():
        recorded = read_recorded_spec(existing)
        whole = grow_spec(recorded, spec, study_dir)
        if whole != recorded and write:
            new_seeds = whole.seeds[len(recorded.seeds):]
            new_variants = [variant.name for variant in whole.variants[len(recorded.variants):]]
            added = ([f"seed(s) {', '.join(map(str, new_seeds))}"] if new_seeds else []) + \
                ([f"variant(s) {', '.join(new_variants)}"] if new_variants else [])
            log(f"study {spec.name} grows: adds {' and '.join(added)}; finished runs are kept")
            atomic_write_bytes(existing, spec_to_toml(whole).encode())
        return whole
    _refuse_foreign(study_dir)
    if write:
        atomic_write_bytes(existing, spec_to_toml(spec).encode())
    return spec


def _refuse_foreign(study_dir: Path) -> None:
    """A folder that holds other things and no spec.toml is not a study: leave it alone."""
    if (study_dir.is_dir() and not (study_dir / SPEC_FILE).is_file()
            and any(entry.name != ".lock" and not entry.name.startswith(EMBEDDED_FILE)  # a shared study's own database
                    for entry in study_dir.iterdir())):
        raise UserError(f"{study_dir} is not empty and holds no {SPEC_FILE}; pass another --out or delete it")


def machine_description() -> dict:
    """CPU and cores, plus the code version, torch version and threads (`provenance.run_provenance`)."""
    from mnist_ops.provenance import run_provenance

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), **run_provenance(), "system": platform.platform()}


def _checked_train_sizes(spec: Spec, data_root) -> dict[str, int]:
    """Load each dataset once and check each variant as `fit` would before its run directory (its teachers, its
    device, its model, precise BN): missing data or a variant that cannot train fails here, before the study
    directory is written (not after the runs of the variants before it, into a directory that then refused the
    corrected spec)."""
    from mnist_ops.data import dataset_info, load_split
    from mnist_ops.distill import checked_teachers
    from mnist_ops.train import check_runnable

    train = {dataset: load_split(dataset, "train", data_root)
             for dataset in sorted({variant.config.dataset for variant in spec.variants})}
    for variant in spec.variants:
        images = train[variant.config.dataset].images
        try:
            checked_teachers(variant.config)
            check_runnable(variant.config, len(dataset_info(variant.config.dataset).classes), tuple(images.shape[1:]))
        except UserError as error:
            raise UserError(f"variant '{variant.name}': {error}") from None
    sizes = {dataset: len(split) for dataset, split in train.items()}
    train_images = {}
    for variant in spec.variants:
        full = sizes[variant.config.dataset]
        train_images[variant.name] = min(full, variant.config.limit_train or full)
    return train_images


def _record_invocation(study_dir: Path, command: str, train_sizes: dict[str, int], seconds: float,
                       completed: bool, invocation: str) -> None:
    """This invocation's entry in study.json, written when it starts, after each run and when it ends (replaced in
    place, by its `invocation` id): one killed with SIGKILL still counts, interrupted, with its time up to its last
    finished run."""
    path = study_dir / STUDY_FILE
    record = read_json_object(path, ("invocations",)) if path.is_file() else {"invocations": []}
    if not isinstance(record["invocations"], list):
        raise damaged_file(path, "'invocations' is not a list")
    record.update(command=command, machine=machine_description())
    record.setdefault("train_images", {}).update(train_sizes)
    entry = {"command": command, "id": invocation, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
             "seconds": round(seconds, 1), "completed": completed}
    record["invocations"] = [old for old in record["invocations"]
                             if not (isinstance(old, dict) and old.get("id") == invocation)] + [entry]
    atomic_write_json(path, record)


def _remaining_time(started: float, done: int, total: int) -> str:
    """' (about N min left)' from the mean time of the runs done so far in this invocation."""
    if done == 0:
        return ""
    seconds = (time.perf_counter() - started) / done * (total - done)
    return f" (about {seconds / 60:.1f} min left)"


def run_study(spec: Spec, study_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
              command: str = "", log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Train every unfinished (variant, seed) run, one after another. Returns the study dir."""
    started = time.perf_counter()
    study_dir = Path(study_dir)
    train_sizes = _checked_train_sizes(spec, data_root)
    _refuse_foreign(study_dir)  # before the lock file goes in
    with DirectoryLock(study_dir, "study directory"):  # one process per study: a second one is refused
        return _run_claimed(spec, study_dir, data_root, command, log, progress, train_sizes, started)


def _run_claimed(spec: Spec, study_dir: Path, data_root, command: str, log: Callable[[str], None], progress: bool,
                 train_sizes: dict[str, int], started: float) -> Path:
    from mnist_ops.train import fit

    claim_study_dir(spec, study_dir, log)
    invocation = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {worker_name()} {uuid.uuid4().hex[:8]}"

    def record(completed: bool) -> None:
        _record_invocation(study_dir, command, train_sizes, time.perf_counter() - started, completed, invocation)

    record(False)
    runs = [(variant, seed) for variant in spec.variants for seed in spec.seeds]
    pending = [(variant, seed) for variant, seed in runs if not is_finished(run_dir(study_dir, variant.name, seed))]
    log(f"study {spec.name}: {len(runs)} runs, {len(runs) - len(pending)} finished earlier, {len(pending)} to train")
    completed = False
    try:
        for number, (variant, seed) in enumerate(pending, start=1):
            directory = run_dir(study_dir, variant.name, seed)
            label = f"[{number}/{len(pending)}] {variant.name} seed {seed}"
            resume = directory.exists()  # fit resumes from last.pt, or starts over if no epoch finished
            if (directory / "last.pt").is_file():
                log(f"{label}: unfinished run found, resuming it from its last.pt")
            elif resume:
                log(f"{label}: unfinished run found with no finished epoch, starting it again")
            log(f"{label}: training{_remaining_time(started, number - 1, len(pending))}")
            config = variant.config.replace(seed=seed)
            try:
                summary = fit(config, directory, data_root=data_root, log=log, progress=progress, resume=resume)
            except TrainingDiverged as error:
                log(f"{label}: diverged, {error.what}; the study goes on, and its report lists the run "
                    f"(delete {directory} to train it again)")
                atomic_write_json(directory / DIVERGED_FILE, diverged_record(directory, variant.name, seed, config, error))
                record(False)
                continue
            atomic_write_json(directory / DONE_FILE, done_record(directory, variant.name, seed, summary, config))
            record(False)
        completed = True
    finally:  # an interrupted invocation's wall time counts too
        record(completed)
    return study_dir
