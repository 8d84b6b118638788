"""Named, complete training recipes. Each one reads on one screen.

A preset fixes model, augmentation, optimizer, schedule, epochs, batch size and the
target accuracy; a TOML file and command-line flags override any key.
"""

from __future__ import annotations

from mnist_ops.config import Config
from mnist_ops.errors import UserError, did_you_mean, show

PRESETS: dict[str, Config] = {
    # The seed's "Add Regularization / Reduce Overfit" run: 511,386 parameters,
    # SGD momentum 0.9 at a constant lr 0.015, batch 128, 15 epochs, perspective + rotation.
    "seed-regularized": Config(
        preset="seed-regularized", model="seed-regularized", dropout=0.05, augment="seed",
        optimizer="sgd", lr=0.015, momentum=0.9, schedule="constant",
        epochs=15, batch_size=128, target_accuracy=99.4,
    ),
    # The seed's previous step: the same net and recipe without BatchNorm, Dropout or augmentation.
    "seed-baseline": Config(
        preset="seed-baseline", model="seed-baseline", dropout=0.0, augment="none",
        optimizer="sgd", lr=0.015, momentum=0.9, schedule="constant",
        epochs=15, batch_size=128, target_accuracy=99.4,
    ),
    # The reference repository's 7,758-parameter net with the seed's recipe.
    "seed-lean": Config(
        preset="seed-lean", model="seed-lean", dropout=0.05, augment="seed",
        optimizer="sgd", lr=0.015, momentum=0.9, schedule="constant",
        epochs=15, batch_size=128, target_accuracy=99.4,
    ),
    # The < 8k record: >= 99.5% in each of the last 3 epochs, <= 15 epochs, < 8,000 parameters.
    # Light augmentation (rotation ±7°), no dropout. On the validation split (seed 1) its last 3
    # epochs read 99.51, 99.48, 99.49% against 99.43, 99.45, 99.49% with the seed's perspective +
    # rotation, with which this recipe met the < 8k challenge at 99.4% (docs/lean-8k/report.md).
    "lean-8k": Config(
        preset="lean-8k", model="lean-8k", dropout=0.0, augment="light",
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, schedule="onecycle",
        epochs=15, batch_size=128, target_accuracy=99.4,
    ),
    # The < 5k record: the best of 16 trials of `mnist-ops tune --spec studies/tune-lean-5k.toml`
    # (trial 19, its best.toml values as found), scored on the validation split: 99.46% mean over
    # the last 3 epochs, against 99.27-99.35% for its first 6 (random) trials.
    # Batch 64, light augmentation and a little label smoothing (docs/tune-lean-5k/report.md).
    "lean-5k": Config(
        preset="lean-5k", model="lean-5k", dropout=0.0, augment="light",
        optimizer="sgd", lr=0.10426162829881667, momentum=0.909651799219885, nesterov=True,
        weight_decay=6.388239556032129e-06, label_smoothing=0.024404780116137885, schedule="onecycle",
        epochs=15, batch_size=64, target_accuracy=99.4,
    ),
    # The < 2k record: the 1,936-parameter separable net, the lean-5k recipe for 20 epochs with the light
    # augmentation (rotation ±7°): such a small net underfits the seed's perspective + rotation.
    "lean-2k": Config(
        preset="lean-2k", model="lean-2k", dropout=0.0, augment="light",
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, schedule="onecycle",
        epochs=20, batch_size=128, target_accuracy=99.0,
    ),
    # lean-8k raced to 99.4%: the same model and light augmentation; bf16 autocast + channels_last,
    # two model copies (one thread each, 128 images each: replicas.py), batch 256 at lr 0.3, OneCycle
    # over 4 epochs. Chosen on the validation split, seeds 1 and 2: 4 epochs ended at 99.32 / 99.28%,
    # as many as 7 epochs did (99.36 / 99.27%); without augmentation 99.05 / 99.16%; 3 epochs 99.06%
    # (seed 1). Time to 99.4% on the test set: docs/speed.md. A racing recipe; lean-8k is the record.
    "lean-8k-fast": Config(
        preset="lean-8k-fast", model="lean-8k", dropout=0.0, augment="light",
        optimizer="sgd", lr=0.3, momentum=0.9, nesterov=True, schedule="onecycle",
        epochs=4, batch_size=256, target_accuracy=99.4, precision="bf16", channels_last=True, replicas=2,
    ),
}

DEFAULT_PRESET = "seed-regularized"


def get_preset(name: str) -> Config:
    if not isinstance(name, str) or name not in PRESETS:
        raise UserError(f"unknown preset {show(name)}{did_you_mean(name, PRESETS)}; "
                        f"choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def build_config(preset: str | None = None, config_file: str | None = None,
                 overrides: dict | None = None) -> Config:
    """Preset defaults, then the TOML file's keys, then `overrides` (command-line flags).

    The preset is the flag's, else the file's `preset` key, else the default preset.
    """
    from mnist_ops.config import check_combination, read_toml, resolve

    file_values = read_toml(config_file) if config_file else {}
    name = preset or file_values.get("preset", DEFAULT_PRESET)
    if not isinstance(name, str):
        raise UserError(f"{config_file}: 'preset' must be a preset name, got {show(name)}")
    config = get_preset(name)
    file_values = {key: value for key, value in file_values.items() if key != "preset"}
    config = resolve(config, file_values, source=str(config_file))
    return check_combination(resolve(config, overrides or {}, source="command line"))
