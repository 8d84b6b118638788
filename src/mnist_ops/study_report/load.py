"""A study's finished runs, read back from its directory, and what each run's records say."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mnist_ops.errors import UserError
from mnist_ops.provenance import ENVIRONMENT_FILE
from mnist_ops.study import (DIVERGED_FILE, DONE_FILE, SPEC_FILE, STUDY_FILE, Spec, damaged_file, read_json_object,
                             read_metrics, read_recorded_spec, run_dir)


@dataclass(frozen=True)
class Run:
    seed: int
    records: list[dict]  # metrics.jsonl: one dict per epoch, `epoch` counted from 0
    summary: dict
    directory: Path
    environment: dict = field(default_factory=dict)  # code version, torch, threads ({} if not recorded)

    @property
    def last(self) -> dict:
        return self.records[-1]

    @property
    def best_test_accuracy(self) -> float:
        """From the records, as the last epoch's accuracy is: both average the same stored values."""
        return max(record["test_accuracy"] for record in self.records)


@dataclass(frozen=True)
class VariantResult:
    name: str
    config: dict
    runs: list[Run]  # trained to the end; empty if every finished run diverged
    diverged: dict[int, str] = field(default_factory=dict)  # seed -> what happened (diverged.json)

    @property
    def seeds_finished(self) -> int:
        """Runs that trained to the end or diverged: the seeds a record claim is counted over."""
        return len(self.runs) + len(self.diverged)

    def final(self, key: str) -> list[float]:
        """The key's value in the last epoch of each run."""
        return [run.last[key] for run in self.runs]

    def last_test(self) -> list[float]:
        return self.final("test_accuracy")

    def best_test(self) -> list[float]:
        return [run.best_test_accuracy for run in self.runs]

    def last_epochs_test(self, last_k: int) -> list[float]:
        """The test accuracy of each of the last K epochs of every run: what a record is judged on."""
        return [record["test_accuracy"] for run in self.runs for record in run.records[-last_k:]]

    def accuracy_gap(self) -> list[float]:
        return [run.last["train_accuracy"] - run.last["test_accuracy"] for run in self.runs]

    def loss_gap(self) -> list[float]:
        return [run.last["test_loss"] - run.last["train_loss"] for run in self.runs]


def first_epoch_reaching(records: list[dict], threshold: float) -> int | None:
    """The epoch (counted from 0, as in metrics.jsonl) whose test accuracy first reached the threshold."""
    for record in records:
        if record["test_accuracy"] >= threshold:
            return record["epoch"]
    return None


def worst_of_last(records: list[dict], last_k: int) -> float:
    """The lowest test accuracy in the last K epochs: what a record is judged on."""
    return min(record["test_accuracy"] for record in records[-last_k:])


def held_target(records: list[dict], target: float, last_k: int) -> bool:
    return worst_of_last(records, last_k) >= target


EPOCH_KEYS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")  # what the report reads


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _load_run(directory: Path) -> Run:
    """A finished run's files, checked for what the report reads: a damaged one is named, with the fix (it was a
    KeyError or a TypeError, and a traceback)."""
    done = read_json_object(directory / DONE_FILE, ("seed", "summary"))
    environment = done.get("environment")
    if environment is None and (directory / ENVIRONMENT_FILE).is_file():  # a done.json older than its environment key
        environment = json.loads((directory / ENVIRONMENT_FILE).read_text())
    records = read_metrics(directory / "metrics.jsonl")
    if not records:  # a finished run has at least one epoch: the report reads its last
        raise damaged_file(directory / "metrics.jsonl", "it holds no epoch")
    for line, record in enumerate(records, start=1):
        wrong = [key for key in EPOCH_KEYS if not _number(record.get(key))]
        if wrong:
            raise damaged_file(directory / "metrics.jsonl", f"line {line} has no number for {', '.join(wrong)}")
    summary = done["summary"]
    if not (isinstance(summary, dict) and _number(summary.get("seconds")) and _number(summary.get("parameters"))):
        raise damaged_file(directory / DONE_FILE, "its summary lacks the run's seconds or parameter count")
    return Run(done["seed"], records, summary, directory, environment or {})


def load_study(study_dir: str | os.PathLike) -> tuple[Spec, list[VariantResult], dict]:
    """The spec, each variant's finished and diverged runs (variants with neither are left out), study.json."""
    study_dir = Path(study_dir)
    if not (study_dir / SPEC_FILE).is_file():
        raise UserError(f"{study_dir} holds no {SPEC_FILE}: not a study directory; run `mnist-ops study` first")
    spec = read_recorded_spec(study_dir / SPEC_FILE)
    results = []
    for variant in spec.variants:
        directories = [run_dir(study_dir, variant.name, seed) for seed in spec.seeds]
        runs = [_load_run(directory) for directory in directories if (directory / DONE_FILE).is_file()]
        diverged = {seed: read_json_object(directory / DIVERGED_FILE, ("diverged",))["diverged"]
                    for seed, directory in zip(spec.seeds, directories)
                    if (directory / DIVERGED_FILE).is_file() and not (directory / DONE_FILE).is_file()}
        if runs or diverged:
            results.append(VariantResult(variant.name, variant.config.to_dict(), runs, diverged))
    if not results:
        raise UserError(f"{study_dir} has no finished runs yet; run the study first")
    info_path = study_dir / STUDY_FILE
    info = read_json_object(info_path) if info_path.is_file() else {}
    invocations = info.get("invocations", [])
    if not (isinstance(invocations, list)
            and all(isinstance(entry, dict) and _number(entry.get("seconds")) for entry in invocations)):
        raise damaged_file(info_path, "'invocations' is not a list of invocations with their seconds")
    return spec, results, info
