import tempfile
from pathlib import Path

import pytest
import tomli_w
from hypothesis import example, given, strategies as st

from fuzzing import KEYS, NAMES, TOML_VALUES, assert_one_line, assert_valid_config, config_changes
from mnist_ops.config import Config, changed_keys, resolve, to_toml
from mnist_ops.fileio import read_toml
from mnist_ops.errors import UserError
from mnist_ops.presets import PRESETS, build_config


def test_seed_regularized_preset_is_the_seeds_recipe():
    config = PRESETS["seed-regularized"]
    assert (config.model, config.optimizer, config.lr, config.momentum, config.batch_size, config.epochs,
            config.augment, config.schedule) == ("seed-regularized", "sgd", 0.015, 0.9, 128, 15, "seed", "constant")


def test_layers_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "seed-lean"\nepochs = 3\nlr = 0.1\n')
    config = build_config(None, str(path), {"lr": 0.2})
    assert (config.preset, config.model, config.epochs, config.lr) == ("seed-lean", "seed-lean", 3, 0.2)
    assert build_config("seed-baseline", str(path), {}).model == "seed-baseline"  # the flag's preset wins


def test_unknown_keys_rejected_by_name(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) learning_rate"):
        build_config(None, str(path), {})


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "'epochs' must be >= 1"),
    ({"epochs": "ten"}, "'epochs' must be int"),
    ({"batch_size": 10**20}, "'batch_size' = 100000000000000000000 does not fit in a 64-bit integer"),
    ({"lr": -1.0}, "'lr' must be in"),
    ({"schedule": "cosine"}, "'schedule' must be one of constant, onecycle"),
    ({"dropout": 1.0}, "'dropout' must be in"),
    ({"nesterov": 1}, "'nesterov' must be bool"),
    ({"plain_epochs": -1}, "'plain_epochs' must be >= 0"),
    ({"epochs": 3, "plain_epochs": 4}, "plain_epochs = 4 is more than epochs = 3"),
    ({"augment": "none", "plain_epochs": 1}, "plain_epochs = 1 does nothing with augment = \"none\""),
    ({"cycles": 0}, "'cycles' must be >= 1"),
    ({"epochs": 4, "cycles": 2}, "cycles = 2 repeats the onecycle schedule, and schedule is 'constant'"),
    ({"schedule": "onecycle", "epochs": 5, "cycles": 2}, "epochs = 5 does not split into cycles = 2 equal parts"),
    ({"schedule": "onecycle", "epochs": 4, "cycles": 2, "plain_epochs": 3},
     r"plain_epochs = 3 is more than epochs = 2 per cycle \(2 cycles\)"),
    ({"train_crop": -1}, "'train_crop' must be >= 0"),
    ({"sam": -0.1}, "'sam' must be in"),
    ({"sam": 0.05, "replicas": 2, "dropout": 0.0}, "^sam = 0.05 takes a second gradient on one copy of the model, and "
                                                   r"replicas = 2; set replicas = 1 \(flag --replicas 1\), or sam = 0$"),
    ({"train_crop": 24, "augment": "none"}, "^train_crop = 24 crops the augmented epochs, and augment is \"none\"; "
                                            "choose an augmentation, or set train_crop = 0$"),
    ({"train_crop": 24, "epochs": 2, "plain_epochs": 2}, "^train_crop = 24 crops the augmented epochs, and every epoch "
                                                         r"is plain \(plain_epochs = 2\); lower plain_epochs"),
    ({"train_crop": 24, "teacher": "a/last.pt", "distill_weight": 0.5}, "^train_crop = 24 with a teacher is not "
                                                                          "supported"),
])
def test_bad_values_rejected(changes, message):
    with pytest.raises(UserError, match=message):
        build_config("seed-lean", None, changes)


def test_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("epochs = = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        build_config(None, str(path), {})
    with pytest.raises(UserError, match="not found"):
        build_config(None, str(tmp_path / "absent.toml"), {})
    with pytest.raises(UserError, match="^unknown preset 'fast'"):
        build_config("fast", None, {})
    path.write_text('preset = "lean8k"\n')  # a preset named in the file: the error names the file
    with pytest.raises(UserError, match=f"^{path}: unknown preset 'lean8k' \\(did you mean 'lean-8k'"):
        build_config(None, str(path), {})
    path.write_bytes(b"\xef\xbb\xbflr = 0.1\n")  # Windows' "UTF-8 with BOM"
    with pytest.raises(UserError, match="starts with a byte order mark .*; save it as plain UTF-8"):
        build_config(None, str(path), {})


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = build_config("seed-regularized", None, {"lr": 0.05, "seed": 7})
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config.to_dict()))
    assert Config(**read_toml(path)) == config
    assert build_config(None, str(path), {}) == config


# ---------------------------------------------------------------------------- fuzzed (hypothesis)
# Random keys and values, as dicts and as TOML files: a valid Config, or one UserError of one line.


@given(config_changes())
@example({"lr": float("nan")})
@example({"seed": 2**64})
@example({"dropout": 10**400})
@example({"preset": "two\nlines"})
@example({"bad\nkey": 1})
def test_fuzz_resolve(changes):
    try:
        config = resolve(Config(), changes, "fuzz.toml")
    except UserError as error:
        assert_one_line(error)
    else:
        assert_valid_config(config)


def _write_toml(directory: str, values: dict) -> str:
    path = Path(directory) / "fuzz.toml"
    path.write_text(tomli_w.dumps(values), encoding="utf-8")
    return str(path)


@given(st.none() | NAMES, config_changes(), st.fixed_dictionaries({}, optional={"preset": NAMES | TOML_VALUES}),
       config_changes(extra_keys=False))
@example(None, {}, {"preset": 0}, {})
@example(None, {}, {"preset": "seed-lean\n"}, {})
def test_fuzz_build_config_from_a_toml_file(preset, file_values, file_preset, overrides):
    with tempfile.TemporaryDirectory() as directory:
        path = _write_toml(directory, {**file_values, **file_preset})
        try:
            config = build_config(preset, path, overrides)
        except UserError as error:
            assert_one_line(error)
        else:
            assert_valid_config(config)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.lists(st.tuples(KEYS, st.sampled_from(["=", " = ", "."]), st.text(max_size=10)), max_size=4)
       .map(lambda lines: "\n".join(f"{k}{sep}{v}" for k, sep, v in lines).encode()))
@example(b"\xff\xfe")  # not UTF-8
@example(b"a = " + b"[" * 100_000 + b"]" * 100_000)  # nested deeper than the parser's recursion
@example(b"a = " + b"{b = " * 5_000 + b"1" + b"}" * 5_000)
def test_fuzz_read_toml_random_bytes(content):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.toml"
        path.write_bytes(content)
        try:
            values = read_toml(path)
        except UserError as error:
            assert_one_line(error)
        else:
            assert isinstance(values, dict)


def test_read_toml_of_a_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_toml(tmp_path)


@pytest.mark.parametrize("line", ['preset = ""', "preset = 0", "preset = false"])
def test_an_empty_or_false_preset_in_a_file_is_refused_not_defaulted(tmp_path, line):
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match="preset"):
        build_config(None, str(path), {})


def test_changed_keys_are_the_ones_that_make_another_recipe():
    """One comparison serves the resume check, a growing study, compare_on_validation and records --pool."""
    before = Config().to_dict()
    after = {**before, "lr": 0.5, "tensorboard": True, "seed": 9}
    assert changed_keys(before, after) == ["lr", "seed"]  # tensorboard changes no number computed
    assert changed_keys(before, after, {"seed"}) == ["lr"]
    older = {key: value for key, value in before.items() if key != "ema"}
    assert changed_keys(older, before) == ["ema"] and changed_keys(before, older) == ["ema"]  # a missing key differs
    assert changed_keys(before, dict(before)) == []
