"""Run configuration in layers: preset defaults, then a TOML file, then command-line flags.

Unknown keys are rejected by name; every value is type- and range-checked; the resolved
config is written into each run directory as `config.toml`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mnist_ops.errors import UserError, did_you_mean, show


def _key(default: Any, help: str) -> Any:
    """A config key: its default and the help text its generated command-line flag shows."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    preset: str = _key("custom", "the named recipe these values started from")
    dataset: str = _key("mnist", "mnist, fashion-mnist, kmnist, emnist-digits, or a directory holding four IDX files")
    model: str = _key("seed-regularized", "a registered model name (mnist-ops list), path/to/nets.py:Net "
                                          "or package.module:build")
    dropout: float = _key(0.05, "dropout probability after each ReLU, for models that have dropout")
    augment: str = _key("seed", "seed (perspective + rotation ±15°), light (rotation ±7°), "
                                "elastic (rotation ±15° + elastic distortion) or none")
    plain_epochs: int = _key(0, "the last N epochs train on the plain images, without augmentation (0 = augment "
                                "every epoch; as YOLO's close_mosaic): the test images are plain")
    train_crop: int = _key(0, "the augmented epochs train on random N x N crops of the augmented images, a cheaper "
                              "step, and the plain epochs and evaluations on whole images (0 = whole images; needs a "
                              "model that pools its whole map, as fast-8k)")
    rotation_fill: str = _key("mean", "what fills the corners a rotation uncovers: mean (the data set's mean pixel, a "
                                      "gray above the black background; this tool's fill until 2026-11-27) or zero (the "
                                      "black background: what the seed's torchvision pipeline drew, since it rotated 8-bit "
                                      "images and torchvision truncates their float fill 0.13 to 0)")
    interpolation: str = _key("nearest", "how augmentation resamples: nearest (torchvision's default, the seed's) "
                                         "or bilinear")
    optimizer: str = _key("sgd", "sgd, adam, or muon (SGD whose conv filters step along an orthogonalized update: muon.py)")
    lr: float = _key(0.015, "learning rate (the peak lr with schedule onecycle)")
    momentum: float = _key(0.9, "SGD momentum (Adam: beta1); with schedule onecycle it runs against the lr, from "
                                "momentum + 0.05 down to momentum - 0.05 at the peak and back")
    nesterov: bool = _key(False, "Nesterov momentum (SGD)")
    weight_decay: float = _key(0.0, "L2 weight decay")
    schedule: str = _key("constant", "constant, or onecycle (warm-up to lr over the first fifth of the steps, cosine down)")
    epochs: int = _key(15, "passes over the training images")
    cycles: int = _key(1, "with schedule onecycle: the schedule and the plain last epochs repeat over this many equal "
                          "parts of the epochs (warm restarts, as SGDR); 1 = one cycle")
    batch_size: int = _key(128, "training images per step")
    eval_batch_size: int = _key(1000, "images per evaluation batch")
    label_smoothing: float = _key(0.0, "cross-entropy label smoothing")
    sam: float = _key(0.0, "radius rho of sharpness-aware minimization (SAM): each step takes its gradient at the weights "
                           "moved by rho along the normalized gradient, and steps from the unmoved weights with it "
                           "(twice the compute per step; 0 = off)")
    precise_bn: int = _key(0, "after each epoch, recompute BatchNorm's running statistics of the evaluated model "
                              "over the first N plain training images, or all when fewer (precise BN: the averages of "
                              "augmented batches do not match the plain test digits); 0 = keep those averages")
    ema: float = _key(0.0, "decay of an exponential moving average of the weights (and BatchNorm statistics), "
                           "updated every step; > 0 evaluates and saves the average (0 = off)")
    teacher: str = _key("", "finished runs (their directories or last.pt files), separated by commas, whose averaged "
                            "softened predictions the model also learns from (distill.py; empty: none)")
    distill_weight: float = _key(0.0, "share of the loss from the teachers' predictions, the rest from the labels "
                                      "(> 0 needs teacher)")
    distill_temperature: float = _key(4.0, "softmax temperature of the teachers' and the model's predictions "
                                           "in that share")
    target_accuracy: float = _key(99.4, "percent; best.pt is saved from epoch 3 on at a new best >= this")
    seed: int = _key(1, "seeds torch, numpy, Python and the shuffling/augmentation generator")
    device: str = _key("auto", "auto (CUDA, else MPS, else the CPU), cpu, cuda or mps")
    precision: str = _key("fp32", "fp32, or bf16 autocast")
    channels_last: bool = _key(False, "NHWC memory format for model and inputs")
    replicas: int = _key(1, "model copies, one thread (core) each, splitting every batch (needs dropout 0)")
    fast_dropout: bool = _key(False, "dropout masks from random bytes: a 2.35x faster layer (models.FastDropout)")
    limit_train: int = _key(0, "train on the first N training images only (0 = all)")
    validation: int = _key(0, "hold out N training images (stratified, fixed) and evaluate on them, "
                              "never on the test set (0 = evaluate on the test set)")
    validation_from: str = _key("random", "which N images validation holds out: random (stratified by class, fixed), "
                                          "or last (the last N in file order: MNIST's file keeps a writer's digits "
                                          "near each other, so fewer held-out writers are trained on; "
                                          "benchmarks/writer_split.py)")
    tensorboard: bool = _key(False, "TensorBoard event files beside metrics.jsonl (extra mnist-ops[tensorboard])")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def cycle_epochs(self) -> int:
        """Epochs per cycle of the schedule (all of them with cycles = 1); check_combination makes it whole."""
        return self.epochs // self.cycles

    def replace(self, **changes: Any) -> "Config":
        return resolve(self, changes, source="override")


# The keys of the first config.toml this tool wrote (2026-11-25). A file that holds them all records a whole run;
# a key it lacks was added since, and that run had its default (presets.build_config).
RECORD_KEYS = frozenset({
    "preset", "dataset", "model", "dropout", "augment", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
    "schedule", "epochs", "batch_size", "eval_batch_size", "label_smoothing", "target_accuracy", "seed", "device",
    "precision", "limit_train",
})

CHOICES = {
    "augment": ("none", "seed", "light", "elastic"),
    "interpolation": ("nearest", "bilinear"),
    "rotation_fill": ("mean", "zero"),
    "optimizer": ("sgd", "adam", "muon"),
    "schedule": ("constant", "onecycle"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "precision": ("fp32", "bf16"),
    "validation_from": ("random", "last"),
}
RANGES = {  # key: (lowest allowed, highest allowed or None), inclusive
    "dropout": (0.0, 0.99),
    "lr": (1e-8, 10.0),
    "momentum": (0.0, 0.999),
    "weight_decay": (0.0, 1.0),
    "epochs": (1, None),
    "plain_epochs": (0, None),
    "train_crop": (0, None),
    "cycles": (1, None),
    "batch_size": (1, None),
    "eval_batch_size": (1, None),
    "label_smoothing": (0.0, 0.5),
    "precise_bn": (0, None),
    "sam": (0.0, 10.0),
    "ema": (0.0, 0.9999),
    "distill_weight": (0.0, 1.0),
    "distill_temperature": (0.1, 100.0),
    "target_accuracy": (0.0, 100.0),
    "seed": (0, 2**63 - 1),
    "limit_train": (0, None),
    "validation": (0, None),
    "replicas": (1, 64),
}
KEY_ALIASES = {  # names from other tools, for "did you mean"
    "learning_rate": "lr", "num_epochs": "epochs", "n_epochs": "epochs", "bs": "batch_size", "net": "model",
    "arch": "model", "augmentation": "augment", "wd": "weight_decay", "scheduler": "schedule", "optim": "optimizer",
}
RESULT_NEUTRAL_KEYS = {"tensorboard"}  # may change on resume or in a grown study: they change no number computed
FIELD_TYPES = {field.name: type(field.default) for field in fields(Config)}


def stored_table(table: dict, skip: set[str] = frozenset(), keep: set[str] = frozenset()) -> dict:
    """A config table as older code stored it (a study's or tune's spec in an Optuna storage): keys
    Config gained since take their defaults, which is what that code ran with, and keys Config no
    longer has are dropped. `skip`: config keys the table never holds; `keep`: its other keys."""
    defaults = Config().to_dict()
    return {**{key: value for key, value in defaults.items() if key not in table and key not in skip},
            **{key: value for key, value in table.items() if key in defaults or key in keep}}


def teacher_files(teacher: str) -> list[str]:
    """The checkpoint paths in a `teacher` value (separated by commas, blanks ignored), in order."""
    return [part.strip() for part in teacher.split(",") if part.strip()]


def changed_keys(before: dict, after: dict, ignore: set[str] = frozenset()) -> list[str]:
    """The keys of two config tables whose values differ (in `after`'s order, then keys only `before`
    has), leaving out the result-neutral keys and `ignore`: what makes two runs different recipes."""
    missing = object()
    skip = RESULT_NEUTRAL_KEYS | set(ignore)
    keys = [*after, *(key for key in before if key not in after)]
    return [key for key in keys if key not in skip and before.get(key, missing) != after.get(key, missing)]


def show_key(key: Any) -> str:
    """A key as TOML writes it bare, else quoted like `show`."""
    return key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key) else show(key)


def _check_value(key: str, value: Any, source: str) -> Any:
    expected = FIELD_TYPES[key]
    if type(value) is not expected and not (expected is float and type(value) is int):  # bool is no int here
        raise UserError(f"{source}: '{key}' must be {expected.__name__}, got {show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{source}: '{key}' must be a finite number, got {show(value)}")
    if type(value) is int and not -2**63 <= value < 2**63:  # config.toml could not hold it: TOML's ints are 64-bit
        raise UserError(f"{source}: '{key}' = {value} does not fit in a 64-bit integer")
    if isinstance(value, str) and not value.isprintable():
        raise UserError(f"{source}: '{key}' must be one line of printable text, got {show(value)}")
    if key in CHOICES and value not in CHOICES[key]:
        raise UserError(f"{source}: '{key}' must be one of {', '.join(CHOICES[key])}, got {show(value)}")
    if key == "dataset":  # a directory of your own is recorded by its absolute path
        from mnist_ops.data import is_local

        try:
            value = str(Path(value).expanduser().resolve()) if is_local(value) else value
        except (RuntimeError, OSError) as error:  # ~unknown-user, a path the system refuses
            raise UserError(f"{source}: 'dataset' {show(value)} is not a usable path ({error})") from None
    if key == "teacher":  # checkpoints are recorded by their absolute paths, as a dataset directory
        try:
            value = ",".join(str(Path(part).expanduser().resolve()) for part in teacher_files(value))
        except (RuntimeError, OSError) as error:
            raise UserError(f"{source}: 'teacher' {show(value)} is not a usable path ({error})") from None
    if key in RANGES:  # before any int -> float conversion: Python compares int and float exactly
        low, high = RANGES[key]
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise UserError(f"{source}: '{key}' must be {bounds}, got {show(value)}")
    return float(value) if expected is float else value


def resolve(base: Config, changes: dict[str, Any], source: str) -> Config:
    """Apply changes on top of base, rejecting unknown keys and bad values by name."""
    unknown = sorted((key for key in changes if key not in FIELD_TYPES), key=str)
    if unknown:
        named = ", ".join(show_key(key) + did_you_mean(key, FIELD_TYPES, KEY_ALIASES) for key in unknown)
        raise UserError(f"{source}: unknown key(s) {named}; known keys: {', '.join(FIELD_TYPES)}")
    checked = {key: _check_value(key, value, source) for key, value in changes.items()}
    return dataclasses.replace(base, **checked)


def check_combination(config: Config) -> Config:
    """Rules between keys, checked once all layers (preset, file, flags) are applied."""
    if config.replicas > 1 and config.dropout > 0:
        raise UserError(f"replicas = {config.replicas} needs dropout = 0 (dropout masks drawn in several threads "
                        "would make runs unrepeatable); set dropout = 0 (flag --dropout 0) or replicas = 1")
    if config.teacher and config.distill_weight == 0:
        raise UserError("a teacher needs distill_weight > 0 (flag --distill-weight 0.5: half the loss from its "
                        "predictions); set it, or drop teacher")
    if config.distill_weight > 0 and not config.teacher:
        raise UserError(f"distill_weight = {config.distill_weight} needs a teacher (flag --teacher RUN/last.pt); "
                        "set one, or set distill_weight = 0")
    if config.cycles > 1 and config.schedule != "onecycle":
        raise UserError(f"cycles = {config.cycles} repeats the onecycle schedule, and schedule is {config.schedule!r}; "
                        "set schedule = \"onecycle\", or cycles = 1")
    if config.epochs % config.cycles:
        raise UserError(f"epochs = {config.epochs} does not split into cycles = {config.cycles} equal parts; "
                        f"make epochs a multiple of {config.cycles}, or change cycles")
    if config.plain_epochs > config.cycle_epochs:
        per_cycle = f" per cycle ({config.cycles} cycles)" if config.cycles > 1 else ""
        raise UserError(f"plain_epochs = {config.plain_epochs} is more than epochs = {config.cycle_epochs}{per_cycle}; "
                        "lower plain_epochs, or set augment = \"none\" to train every epoch on plain images")
    if config.plain_epochs and config.augment == "none":
        raise UserError(f"plain_epochs = {config.plain_epochs} does nothing with augment = \"none\" (every epoch "
                        "is plain already); set plain_epochs = 0, or choose an augmentation")
    if config.train_crop and config.augment == "none":
        raise UserError(f"train_crop = {config.train_crop} crops the augmented epochs, and augment is \"none\"; "
                        "choose an augmentation, or set train_crop = 0")
    if config.train_crop and config.plain_epochs == config.cycle_epochs:
        raise UserError(f"train_crop = {config.train_crop} crops the augmented epochs, and every epoch is plain "
                        f"(plain_epochs = {config.plain_epochs}); lower plain_epochs, or set train_crop = 0")
    if config.train_crop and config.teacher:
        raise UserError(f"train_crop = {config.train_crop} with a teacher is not supported (the teachers would see "
                        "the crops); set train_crop = 0, or drop teacher")
    if config.validation_from != "random" and not config.validation:
        raise UserError(f"validation_from = {config.validation_from!r} picks which images validation holds out, and "
                        "validation is 0; set validation = N (flag --validation 10000), or drop validation_from")
    if config.sam and config.replicas > 1:
        raise UserError(f"sam = {config.sam} takes a second gradient on one copy of the model, and replicas = "
                        f"{config.replicas}; set replicas = 1 (flag --replicas 1), or sam = 0")
    if config.replicas > config.batch_size:
        raise UserError(f"replicas = {config.replicas} is more than batch_size = {config.batch_size}; "
                        "lower replicas or raise batch_size")
    if config.replicas > 1 and config.device in ("cuda", "mps"):
        raise UserError(f"replicas = {config.replicas} splits batches over CPU cores; use device cpu or auto, "
                        "or replicas = 1")
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(values: dict[str, Any]) -> str:
    """Flat key = value TOML, readable back by `read_toml`."""
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items())
