import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fuzzing import Payload
from mnist_ops.cli import main
from mnist_ops.errors import UserError
from mnist_ops.presets import build_config


def run_cli(*args, env=None, cwd=None):
    """Run the real command in a subprocess: exit code, stdout, stderr."""
    result = subprocess.run([sys.executable, "-m", "mnist_ops", *args], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=600)
    return result.returncode, result.stdout, result.stderr


def assert_one_line_error(code, stderr, *fragments):
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["train", "--preset", "nope"], ["unknown preset 'nope'", "seed-regularized"]),
    (["summary", "--model", "nope"], ["unknown model 'nope'"]),
    (["train", "--epochs", "zero"], ["invalid int value"]),
    (["train", "--epochs", "0"], ["'epochs' must be >= 1"]),
    (["evaluate", "--checkpoint", "/nonexistent/best.pt"], ["not found"]),
    (["data", "stats", "--dataset", "cifar"], ["unknown dataset 'cifar'"]),
    (["frobnicate"], ["invalid choice"]),
    (["trian"], ["invalid choice: 'trian'", "(did you mean 'train'?)"]),
    (["data", "fecth"], ["(did you mean 'fetch'?)"]),
    (["train", "--preset", "seed-lea"], ["unknown preset 'seed-lea' (did you mean 'seed-lean'?)"]),
    (["summary", "--model", "lean8k"], ["unknown model 'lean8k' (did you mean 'lean-8k'"]),
    (["data", "preview", "--count", "500"], ["--count must be in [1, 100], got 500"]),
    (["data", "preview", "--out", "digits.gif"], ["cannot write a figure to digits.gif", ".jpg"]),
    (["train", "--preset", "lean-8k-fast", "--dropout", "0.1"], ["needs dropout = 0", "--dropout 0"]),
    (["bench", "--preset", "lean-8k-fast", "--model", "nope"], ["unknown model 'nope'"]),
    (["bench", "--preset", "lean-8k-fast", "--optimizer", "sgdd"], ["invalid choice: 'sgdd'"]),
    (["study", "status", "/nonexistent/study"], ["holds no spec.toml and no optuna.db: not a study directory"]),
    (["study", "status"], ["`study status` needs the study directory"]),
    (["train", "--learning-rate", "0.1"], ["unrecognized arguments: --learning-rate 0.1 (did you mean '--lr'?)",
                                           "(see `mnist-ops train --help`)"]),
    (["train", "--batchsize", "64"], ["(did you mean '--batch-size'"]),
    # an empty value is no value: not a new run, no config file, the default preset, the current directory
    (["train", "--resume", ""], ["--resume is empty; give it a value, or leave it out"]),
    (["train", "--config", ""], ["--config is empty"]),
    (["train", "--teacher", "", "--epochs", "0"], ["'epochs' must be >= 1"]),  # teacher '': none, a valid value
    (["data", "stats", "--rot", "x"], ["(did you mean '--root'", "(see `mnist-ops data stats --help`)"]),
    (["summary", "--preset", ""], ["--preset is empty"]),
    (["predict", "--checkpoint", "run", ""], ["inputs is empty"]),
    (["bench", "--preset", "seed-lean", "--batch-size", "100000"],
     ["batch_size 100000 is more than the 60,000 training images"]),
])
def test_user_mistakes_give_one_line_and_exit_2(args, fragments):
    code, _, stderr = run_cli(*args)
    assert_one_line_error(code, stderr, *fragments)


def test_paths_of_the_wrong_kind_are_named_as_such(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    cases = [
        (["train", "--resume", str(tmp_path / "gone")], [f"{tmp_path / 'gone'}: no such run directory"]),
        (["train", "--resume", str(tmp_path / "run" / "last.pt")], ["is a file; pass the directory it is in"]),
        (["train", "--resume", str(tmp_path / "run")], ["holds no config.toml: no run started there"]),
        (["predict", "--model", str(tmp_path / "run"), str(tmp_path / "run" / "last.pt")],
         ["is a directory; --model takes an .onnx file"]),
        (["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), "/dev/zero"],
         ["/dev/zero: not a regular file or a directory"]),  # once "no such file", and a read would never end
        # refused before the work: the range test, the measuring, the export, the training
        *[(args, [f"{tmp_path / 'run' / 'last.pt'} is a file, not a directory"]) for args in (
            ["lr-find", "--preset", "seed-lean", "--out", str(tmp_path / "run" / "last.pt" / "find")],
            ["bench", "--json", str(tmp_path / "run" / "last.pt" / "b.json")],
            ["data", "preview", "--out", str(tmp_path / "run" / "last.pt" / "p.png")],
            ["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "run" / "last.pt" / "m.onnx")],
            ["train", "--out", str(tmp_path / "run" / "last.pt" / "new")])],
        (["train", "--out", str(tmp_path) + "/x\udcff"], ["is not valid UTF-8; choose a name in UTF-8"]),
        (["train", "--out", str(tmp_path / "run" / "last.pt")], ["last.pt is a file, and this command writes a "
                                                                 "directory there"]),
        (["evaluate", "--checkpoint", "/dev/null"], ["checkpoint /dev/null is not a regular file"]),
    ]
    for args, fragments in cases:
        assert_one_line_error(main(args), capsys.readouterr().err, *fragments)


def test_unknown_config_key_and_missing_data(tmp_path, monkeypatch):
    config = tmp_path / "bad.toml"
    config.write_text("epochs = 1\nbatchsize = 64\nlearning_rate = 0.1\n")
    code, _, stderr = run_cli("train", "--config", str(config))
    assert_one_line_error(code, stderr, "unknown key(s) batchsize (did you mean 'batch_size'",
                          "learning_rate (did you mean 'lr'?)")
    code, _, stderr = run_cli("data", "stats", "--root", str(tmp_path / "empty"))
    assert_one_line_error(code, stderr, "missing", f"`mnist-ops data fetch --dataset mnist --root {tmp_path / 'empty'}`")
    code, _, stderr = run_cli("train", "--data-root", str(tmp_path / "empty"))
    assert_one_line_error(code, stderr, f"--root {tmp_path / 'empty'}`")


def test_version_names_the_package_and_torch():
    from mnist_ops import __version__

    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith(f"mnist-ops {__version__}") and f"torch {torch.__version__}" in out


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"\x00" * 100)
    code, _, stderr = run_cli("evaluate", "--checkpoint", str(tmp_path / "best.pt"))
    assert_one_line_error(code, stderr, "unreadable")
    import pickle

    (tmp_path / "last.pt").write_bytes(pickle.dumps({"a": 1}))  # torch warns of its protocol before refusing it
    code, _, stderr = run_cli("evaluate", "--checkpoint", str(tmp_path / "last.pt"))
    assert_one_line_error(code, stderr, "unreadable (UnpicklingError)")


def test_summary_prints_layers_and_receptive_field(capsys):
    assert main(["summary", "--preset", "seed-regularized"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 511,386" in out
    assert out.splitlines()[-1].split("|")[-2].strip() == "28*28"


@pytest.mark.integration
def test_train_then_evaluate_smoke(mnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "seed-lean", "--epochs", "1", "--limit-train", "2000",
                 "--out", str(out), "--data-root", str(mnist_root), "--no-progress"]) == 0
    trained = capsys.readouterr().out
    assert "epoch  0:" in trained and "best test accuracy" in trained
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--data-root", str(mnist_root)]) == 0
    report = capsys.readouterr().out
    assert "per-class accuracy" in report and "confusion matrix" in report
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert f"test accuracy {checkpoint['metrics']['test_accuracy']:.2f}%" in report
    rows = report.split("(rows: true, columns: predicted)\n")[1].splitlines()[1:]
    assert [row.split()[0] for row in rows] == [str(digit) for digit in range(10)]
    assert all(len(row.split()) == 11 for row in rows)  # each row label once, then 10 counts
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--data-root", str(mnist_root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_accuracy"] == round(checkpoint["metrics"]["test_accuracy"], 2)
    assert result["images"] == 10_000 and sum(map(sum, result["confusion_matrix"])) == 10_000
    assert result["correct"] == sum(result["confusion_matrix"][i][i] for i in range(10))
    assert set(result["per_class_accuracy"]) == {str(digit) for digit in range(10)}
    # a second run into the same directory must not overwrite the first
    before = (out / "metrics.jsonl").read_bytes()
    assert main(["train", "--preset", "seed-lean", "--epochs", "1", "--out", str(out),
                 "--data-root", str(mnist_root)]) == 2
    assert (out / "metrics.jsonl").read_bytes() == before


# ------------------------------------------------------------------ study, lr-find, data preview

def write_spec(path, preset="seed-lean", extra=""):
    path.write_text(f'name = "cli"\nseeds = 1\n[[variant]]\nname = "only"\npreset = "{preset}"\n{extra}')
    return str(path)


@pytest.mark.parametrize("args, fragments", [
    (["study"], ["name a built-in study"]),
    (["study", "nope"], ["unknown built-in study 'nope'", "regularization"]),
    (["study", "regularization", "--seeds", "0"], ["--seeds must be a count in [1, "]),
    (["study", "regularization", "--epochs", "0"], ["'epochs' must be >= 1"]),
    (["study", "report"], ["needs the study directory"]),
    (["study", "report", "/nonexistent/study"], ["not a study directory"]),
    (["study", "report", "/some/study", "--seeds", "5"], ["takes no --seeds", "drop it"]),
    (["study", "report", "/some/study", "--spec", "x.toml", "--report-only"], ["takes no --spec, --report-only"]),
    (["lr-find", "--preset", "seed-lean", "--start-lr", "1", "--end-lr", "0.1"], ["need 1e-08 <= --start-lr < --end-lr <= 10"]),
    (["lr-find", "--preset", "nope"], ["unknown preset 'nope'"]),
    (["data", "preview", "--preset", "seed-lean", "--count", "0"], ["--count must be in [1, 100], got 0"]),
    (["data", "preview", "--preset", "seed-lean", "--seed", "-1"], ["'seed' must be in [0, ", "got -1"]),  # was drawn
])
def test_measurement_commands_reject_bad_input_in_one_line(args, fragments, capsys):
    code = main(args)
    assert_one_line_error(code, capsys.readouterr().err, *fragments)


def test_study_spec_mistakes_are_one_line_and_create_nothing(tmp_path, capsys):
    out = tmp_path / "study"
    for spec, fragment in ((write_spec(tmp_path / "a.toml", preset="fast"), "unknown preset 'fast'"),
                           (write_spec(tmp_path / "b.toml", extra='model = "nope"\n'), "unknown model 'nope'"),
                           (write_spec(tmp_path / "c.toml", extra="batchsize = 3\n"), "unknown key(s) batchsize"),
                           (write_spec(tmp_path / "d.toml", extra="lr = -1.0\n"), "'lr' must be in")):
        code = main(["study", "--spec", spec, "--out", str(out)])
        assert_one_line_error(code, capsys.readouterr().err, "variant 'only'", fragment)
    assert not out.exists()
    code = main(["study", "regularization", "--spec", write_spec(tmp_path / "e.toml")])
    assert_one_line_error(code, capsys.readouterr().err, "not both")


@pytest.mark.parametrize("command", ["report", "status"])
def test_study_report_and_status_name_a_damaged_run_file_in_one_line(command, tmp_path, capsys):
    from mnist_ops.study import parse_spec, spec_to_toml

    spec = parse_spec({"name": "s", "seeds": 1, "variant": [{"name": "a", "preset": "seed-lean"}]}, "s.toml")
    (tmp_path / "spec.toml").write_text(spec_to_toml(spec))
    run = tmp_path / "a" / "seed1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"epoch": 0, "test_accuracy": 97.0}\n{"epoch": 1, "te')  # cut short
    (run / "done.json").write_text('{"seed": 1, "summary": {}}')
    code = main(["study", command, str(tmp_path)])
    assert_one_line_error(code, capsys.readouterr().err, f"{run / 'metrics.jsonl'} is damaged (line 2 is not a JSON",
                          f"delete {run / 'done.json'} and run the study again")


def test_study_flag_of_the_wrong_type():
    code, _, stderr = run_cli("study", "regularization", "--seeds", "three")
    assert_one_line_error(code, stderr, "invalid int value")


@pytest.mark.integration
def test_data_preview_writes_the_format_its_suffix_names_in_rows_of_ten(mnist_root, tmp_path, capsys):
    from PIL import Image

    sizes = {}
    for count, name, magic in ((6, "preview.png", b"\x89PNG\r\n\x1a\n"), (30, "preview.jpg", b"\xff\xd8\xff"),
                               (100, "wide.png", b"\x89PNG\r\n\x1a\n")):
        out = tmp_path / name
        assert main(["data", "preview", "--preset", "seed-lean", "--count", str(count), "--out", str(out),
                     "--root", str(mnist_root)]) == 0
        assert out.read_bytes()[:len(magic)] == magic
        assert "each row before and the row below it after" in capsys.readouterr().out
        sizes[count] = Image.open(out).size
    assert sizes[30][0] == sizes[100][0] < 1500  # 10 digits per row, however many digits
    assert sizes[100][1] > 3 * sizes[30][1] > 3 * sizes[6][1]
    before = (tmp_path / "preview.png").read_bytes()  # a file named by --out is not drawn over unless forced
    preview = ["data", "preview", "--preset", "seed-lean", "--count", "12", "--root", str(mnist_root)]
    assert main([*preview, "--out", str(tmp_path / "preview.png")]) == 2
    assert "preview.png already exists; pass another --out, or --force" in capsys.readouterr().err
    assert (tmp_path / "preview.png").read_bytes() == before
    assert main([*preview, "--out", str(tmp_path / "preview.png"), "--force"]) == 0
    assert (tmp_path / "preview.png").read_bytes() != before  # 12 digits now, where there were 6
    assert main([*preview, "--out", str(tmp_path)]) == 2 and "is a directory" in capsys.readouterr().err


@pytest.mark.integration
def test_data_preview_draws_another_augmentation_than_the_presets(mnist_root, tmp_path, capsys, monkeypatch):
    import mnist_ops.augment

    drawn = []
    real = mnist_ops.augment.augment_batch

    def recorded(kind, images, fill, generator=None, interpolation="nearest"):
        drawn.append((kind, interpolation))
        return real(kind, images, fill, generator, interpolation)

    monkeypatch.setattr(mnist_ops.augment, "augment_batch", recorded)
    monkeypatch.chdir(tmp_path)  # the default path is runs/preview-<preset>[-<augment>-<interpolation>].png
    common = ["data", "preview", "--preset", "lean-5k", "--root", str(mnist_root)]
    assert main(common) == 0
    assert "after augment 'seed' (nearest, rotation fill mean)" in capsys.readouterr().out
    assert main([*common, "--augment", "elastic", "--interpolation", "bilinear"]) == 0
    assert "runs/preview-lean-5k-elastic-bilinear.png" in capsys.readouterr().out
    assert drawn == [("seed", "nearest"), ("elastic", "bilinear")]
    assert (tmp_path / "runs" / "preview-lean-5k.png").is_file()
    code, _, stderr = run_cli("data", "preview", "--augment", "wobbly")
    assert_one_line_error(code, stderr, "invalid choice: 'wobbly'")


@pytest.mark.integration
def test_study_from_a_spec_then_report_only(mnist_root, tmp_path, capsys):
    spec = write_spec(tmp_path / "cli.toml", extra='augment = "none"\n')
    out = tmp_path / "study"
    args = ["study", "--spec", spec, "--epochs", "1", "--limit-train", "500", "--out", str(out),
            "--data-root", str(mnist_root), "--no-progress"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert f"Command: `mnist-ops study --spec {spec} --epochs 1 --limit-train 500" in report
    assert "| only | seed-lean |" in report and "500 train images" in report
    (out / "report.md").unlink()
    metrics = (out / "only" / "seed1" / "metrics.jsonl").read_bytes()
    assert main(["study", "report", str(out), "--data-root", str(mnist_root)]) == 0
    assert (out / "report.md").read_text() == report  # regenerated from the finished runs alone
    assert (out / "only" / "seed1" / "metrics.jsonl").read_bytes() == metrics
    (out / "report.md").unlink()  # a flag before the directory: "unrecognized arguments" once (an audit)
    assert main(["study", "report", "--data-root", str(mnist_root), str(out)]) == 0
    assert (out / "report.md").read_text() == report
    assert main(["study", "status", "--no-progress", str(out)]) == 0


def test_bench_rejects_bad_counts_in_one_line(capsys):
    code, _, stderr = run_cli("bench", "--batches", "1")
    assert_one_line_error(code, stderr, "--batches must be >= 2")
    # 1,000 DataLoader processes once ran for minutes and ended in a traceback
    assert_one_line_error(main(["bench", "--workers", "1000"]), capsys.readouterr().err, "--workers between 0 and 32")


def test_results_files_are_never_overwritten(tmp_path, capsys):
    cited = tmp_path / "bench.json"
    cited.write_text('{"cited": true}')
    assert_one_line_error(main(["bench", "--json", str(cited)]), capsys.readouterr().err,
                          "exists and results files are never overwritten")
    assert cited.read_text() == '{"cited": true}'


def test_lr_find_refuses_an_earlier_result_unless_forced(tmp_path, capsys):
    (tmp_path / "lr_find.json").write_text("{}")
    code = main(["lr-find", "--preset", "seed-lean", "--out", str(tmp_path), "--no-progress"])
    assert_one_line_error(code, capsys.readouterr().err, "already holds lr_find.json", "--force")
    assert (tmp_path / "lr_find.json").read_text() == "{}"


def test_a_refused_path_is_one_line_not_a_traceback(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data root should be")
    code, _, stderr = run_cli("data", "fetch", "--dataset", "fashion-mnist", "--root", str(blocker / "root"))
    assert_one_line_error(code, stderr, "not-a-directory")


def test_train_flags_override_the_preset_and_file(tmp_path):
    from mnist_ops.cli import build_parser, train_config

    config_file = tmp_path / "run.toml"
    config_file.write_text('epochs = 3\nchannels_last = false\n')

    def config(*flags):
        return train_config(build_parser().parse_args(["train", "--preset", "lean-8k-fast", *flags]))

    assert config().channels_last is True and config().precision == "bf16"
    assert config("--config", str(config_file)).channels_last is False
    assert config("--config", str(config_file), "--channels-last").channels_last is True
    assert config("--no-channels-last", "--precision", "fp32", "--epochs", "2").to_dict() == {
        **build_config("lean-8k-fast").to_dict(), "channels_last": False, "precision": "fp32", "epochs": 2}


def test_list_names_every_model_and_preset_with_its_recipe(capsys):
    from mnist_ops.models import count_parameters, create_model, list_models
    from mnist_ops.presets import PRESETS

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in list_models():
        assert any(line.split()[:2] == [name, f"{count_parameters(create_model(name)):,}"] for line in lines), name
    preset_lines = lines[lines.index("presets:") + 1:]
    assert sorted(line.split()[0] for line in preset_lines) == sorted(PRESETS)
    fast = next(line for line in preset_lines if line.split()[0] == "lean-8k-fast")
    assert "batch 256" in fast and "plain last epoch, precise BN over 5,120, bf16, channels_last, 2 replicas" in fast
    assert "ema 0.999, fp32" in next(line for line in preset_lines if line.split()[0] == "lean-8k")


def _other_value(key: str, value):
    """A valid value for `key` that differs from `value`, as it would be typed on the command line."""
    from mnist_ops.config import CHOICES

    if key in CHOICES:
        return next(choice for choice in CHOICES[key] if choice != value)
    if isinstance(value, bool):
        return not value
    if key == "model":
        return "lean-5k" if value != "lean-5k" else "lean-8k"
    if key == "dataset":
        return "fashion-mnist"
    if key == "teacher":
        return "/runs/teacher/last.pt"  # absolute: the config records a teacher by its absolute path
    if isinstance(value, int):
        return value + 1
    return round(value / 2, 6) if value else 0.1


def _flag_words(key: str, value) -> list[str]:
    """The command-line words that set config `key` to `value`: --key VALUE, --key or --no-key."""
    flag = "--" + key.replace("_", "-")
    return [flag] if value is True else [f"--no-{key.replace('_', '-')}"] if value is False else [flag, str(value)]


def _config_keys():
    from dataclasses import fields

    from mnist_ops.config import Config

    return [field.name for field in fields(Config) if field.name != "preset"]


@pytest.mark.parametrize("key", _config_keys())
def test_every_config_key_has_a_train_flag_that_reaches_the_config(key):
    from mnist_ops.cli import build_parser, train_config

    base = build_config("lean-8k")
    value = _other_value(key, getattr(base, key))
    extra = {"replicas": ["--dropout", "0"], "teacher": ["--distill-weight", "0.5"],  # the keys they need
             "distill_weight": ["--teacher", "/runs/teacher/last.pt"], "cycles": ["--epochs", "16"],
             "validation_from": ["--validation", "100"]}.get(key, [])
    config = train_config(build_parser().parse_args(["train", "--preset", "lean-8k", *_flag_words(key, value), *extra]))
    assert getattr(config, key) == value


def test_train_help_shows_each_key_with_its_help_text_and_default(capsys):
    from dataclasses import fields

    from mnist_ops.config import Config

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in fields(Config):
        if field.name != "preset":
            assert "--" + field.name.replace("_", "-") in text
            assert " ".join(field.metadata["help"].split()) in text, field.name
    assert "(default: the preset's; 0.015 in seed-regularized)" in text


def test_bench_help_quotes_the_defaults_of_the_preset_it_measures(capsys):
    """bench measures lean-8k unless told, and its help quoted seed-regularized's model, optimizer and batch size."""
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "named recipe to measure (default: lean-8k)" in text
    assert "(default: the preset's; 'lean-8k' in lean-8k)" in text and "(default: the preset's; 'muon' in lean-8k)" in text
    assert "seed-regularized" not in text


@pytest.mark.integration
def test_a_students_model_file_trains_evaluates_and_its_checkpoint_refuses_a_changed_file(
        mnist_root, student_net, tmp_path, capsys):
    reference = f"{student_net}:Net"
    run = tmp_path / "run"
    assert main(["train", "--preset", "seed-baseline", "--model", reference, "--epochs", "1", "--limit-train", "10000",
                 "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"model {reference} takes no dropout, num_classes: left out dropout = 0.0, num_classes = 10" in out
    assert main(["evaluate", "--checkpoint", str(run / "last.pt")]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 85.0, out  # one epoch on 10,000 images through its log_softmax head: 88.75% measured
    assert main(["summary", "--model", reference]) == 0
    assert "Total params: 56,714" in capsys.readouterr().out

    assert main(["train", "--model", reference, "--dropout", "0.2", "--out", str(tmp_path / "x")]) == 2
    assert "cannot take dropout = 0.2" in capsys.readouterr().err
    student_net.write_text(student_net.read_text().replace("64", "65"))
    assert main(["evaluate", "--checkpoint", str(run / "last.pt")]) == 2
    assert "nets.py changed since this checkpoint was written" in capsys.readouterr().err
    student_net.rename(tmp_path / "elsewhere.py")
    code, _, stderr = run_cli("evaluate", "--checkpoint", str(run / "last.pt"))
    assert_one_line_error(code, stderr, f"model '{reference}' was built from {student_net}, which is gone")


UNTRACEABLE_NET = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 13 * 13, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().reshape(len(x), -1))  # torch.fx cannot trace len()
"""


def test_a_net_torch_fx_cannot_trace_is_evaluated_and_predicted_unfolded_and_refused_by_export(mnist_root, mnist_test, tmp_path,
                                                                                capsys):
    # BatchNorm is folded into its conv for evaluation through torch.fx; such a net once trained an epoch, then
    # died with a traceback at its first evaluation, and could not be predicted with either.
    (tmp_path / "nets.py").write_text(UNTRACEABLE_NET)
    run = tmp_path / "run"
    assert main(["train", "--preset", "seed-baseline", "--model", f"{tmp_path / 'nets.py'}:Net", "--epochs", "1",
                 "--limit-train", "2000", "--out", str(run), "--no-progress"]) == 0
    accuracy = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_accuracy"]
    assert accuracy > 80, accuracy
    capsys.readouterr()
    image = tmp_path / "seven.png"
    Image.fromarray(255 - mnist_test.images[0].numpy()).save(image)
    assert main(["predict", "--checkpoint", str(run / "last.pt"), str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: 7 (")
    # torch.export cannot keep its batch dimension free, and the ONNX exporter then fixes it without a word
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "net.onnx")]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "with a dynamic batch", "len(x)?", "x.flatten(1)")
    assert not (tmp_path / "net.onnx").exists()


@pytest.mark.parametrize("contents, fragments", [
    (None, ["model 'nets.py:Net': file", "not found"]),
    ("raise ImportError('no torch here')\n", ["model 'nets.py:Net': importing", "raised ImportError: no torch here"]),
    ("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x.flatten(1)\n",
     ["model 'nets.py:Net' returns [2, 784]", "[N, 10]"]),
])
@pytest.mark.integration
def test_bad_model_files_are_one_line_from_train_and_summary(mnist_root, tmp_path, contents, fragments):
    if contents is not None:
        (tmp_path / "nets.py").write_text(contents)
    for command in (["summary"], ["train", "--data-root", str(mnist_root), "--out", str(tmp_path / "run")]):
        code, _, stderr = run_cli(*command, "--model", "nets.py:Net", cwd=tmp_path)
        assert_one_line_error(code, stderr, *fragments)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


UNTRACEABLE = """import torch
from dataclasses import dataclass
from torch import nn


@dataclass
class Out:
    y: torch.Tensor


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return Out(self.conv(x))


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body, self.head = Body(), nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.body(x).y.mean((2, 3)))
"""


@pytest.mark.integration
def test_a_net_torchinfo_cannot_trace_is_one_line_from_summary_and_trains_without_a_table(mnist_root, tmp_path,
                                                                                          capsys, monkeypatch):
    """A layer returning a dataclass: torchinfo raised "Failed to run torchinfo" under a traceback from summary and
    from train, which left a directory holding only .lock (a review). The net itself trains."""
    monkeypatch.setenv("MNIST_OPS_TRUSTED_MODELS", str(tmp_path / "trusted"))
    (tmp_path / "nets.py").write_text(UNTRACEABLE)
    model = f"{tmp_path / 'nets.py'}:Net"
    assert main(["summary", "--model", model]) == 2
    assert_one_line_error(2, capsys.readouterr().err, "torchinfo cannot trace this model's layers")
    run = tmp_path / "run"
    assert main(["train", "--preset", "seed-baseline", "--model", model, "--epochs", "1", "--limit-train", "256",
                 "--data-root", str(mnist_root), "--out", str(run), "--no-progress"]) == 0
    assert "summary.txt: no layer table: torchinfo cannot trace" in capsys.readouterr().out
    assert (run / "summary.txt").read_text().startswith("no layer table: torchinfo cannot trace this model's layers")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_list_shows_entry_point_models_without_importing_them(installed_package, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "zoo-tiny                 from mnist-zoo 1.0 (mnist_zoo:tiny)" in out
    assert "mnist_zoo" not in sys.modules


@pytest.mark.integration
def test_an_entry_point_model_trains_by_name(mnist_root, installed_package, tmp_path, capsys):
    assert main(["train", "--preset", "lean-8k", "--model", "zoo-tiny", "--epochs", "1", "--limit-train", "2000",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["model_source"]["distribution"] == "mnist-zoo 1.0"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0


def test_data_preview_and_stats_of_an_emnist_directory(tmp_path, capsys):
    from mnist_ops.idx import write_idx

    for split, count in (("train", 12), ("test", 4)):
        write_idx(tmp_path / f"emnist-digits-{split}-images-idx3-ubyte.gz",
                  torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8))
        write_idx(tmp_path / f"emnist-digits-{split}-labels-idx1-ubyte.gz", torch.arange(count).remainder(10).byte())
    assert main(["data", "stats", "--dataset", str(tmp_path), "--root", str(tmp_path / "root")]) == 0
    assert "12 train / 4 test images" in capsys.readouterr().out
    assert main(["data", "preview", "--dataset", str(tmp_path), "--count", "4", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- fuzzed inputs, end to end
# Representative cases of what tests/test_{idx,config,study,engine}.py fuzz, through the real command.

@pytest.mark.parametrize("way", ["pickle", "model_source"])
def test_a_checkpoint_that_would_run_code_is_one_line_and_never_runs(tmp_path, way):
    from mnist_ops.engine import build_model, save_checkpoint
    from mnist_ops.models import build_record

    marker = tmp_path / "payload-ran"
    if way == "pickle":
        torch.save(Payload(marker), tmp_path / "evil.pt")
    else:  # weights_only-safe: the model's build record names a function and its arguments
        config = build_config("lean-8k")
        model = build_model(config)
        source = {**build_record(model), "kind": "module", "target": "subprocess:getoutput",
                  "kwargs": {"cmd": f"touch {marker}"}}
        save_checkpoint(tmp_path / "evil.pt", {"model_name": "lean-8k", "model_source": source,
                                               "model": model.state_dict(), "config": config.to_dict(), "epoch": 3,
                                               "metrics": {}, "mean": 0.13, "std": 0.31})
    code, _, stderr = run_cli("evaluate", "--checkpoint", str(tmp_path / "evil.pt"))
    assert_one_line_error(code, stderr, "unreadable" if way == "pickle" else "mnist-ops train passes only")
    assert not marker.exists()


@pytest.mark.parametrize("content, fragment", [
    (b"lr = nan\n", "'lr' must be a finite number"),
    (b'epochs = 2\n"two\\nlines" = 1\n', r"unknown key(s) 'two\nlines'"),
])
def test_junk_config_files_are_one_line(tmp_path, content, fragment):
    (tmp_path / "junk.toml").write_bytes(content)
    code, _, stderr = run_cli("train", "--config", str(tmp_path / "junk.toml"), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, stderr, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
@pytest.mark.parametrize("mode", [[], ["--precision", "bf16", "--channels-last", "--ema", "0.9"]],
                         ids=["fp32", "bf16-channels-last-ema"])
def test_evaluate_reads_the_accuracy_the_run_logged(mnist_root, tmp_path, capsys, mode):
    out = tmp_path / "run"
    assert main(["train", "--preset", "lean-8k", "--epochs", "1", "--limit-train", "2000", *mode,
                 "--out", str(out), "--data-root", str(mnist_root), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--data-root", str(mnist_root), "--json"]) == 0
    logged = torch.load(out / "last.pt", weights_only=True)["metrics"]
    result = json.loads(capsys.readouterr().out)
    assert result["correct"] == logged["test_correct"]  # to the image, as trained
    assert result["test_loss"] == round(logged["test_loss"], 4)  # same precision, layout and batches


@pytest.mark.parametrize("key", ["model", "optimizer", "batch_size", "precision", "channels_last", "fast_dropout",
                                 "ema"])
def test_bench_flags_reach_the_config_it_measures(key):
    from mnist_ops.cli import BENCH_KEYS, build_parser, config_overrides

    value = _other_value(key, getattr(build_config("lean-8k"), key))
    args = build_parser().parse_args(["bench", "--preset", "lean-8k", *_flag_words(key, value)])
    assert getattr(build_config(args.preset, None, config_overrides(args, BENCH_KEYS)), key) == value


def test_resume_gives_a_key_the_run_never_recorded_its_default_not_the_presets_value_of_today(tmp_path):
    """A lean-8k-fast run started before the preset took precise BN must resume as it started: without it."""
    from mnist_ops.cli import build_parser, train_config
    from mnist_ops.config import to_toml

    old = {key: value for key, value in build_config("lean-8k-fast").to_dict().items() if key != "precise_bn"}
    (tmp_path / "config.toml").write_text(to_toml(old))
    resumed = train_config(build_parser().parse_args(["train", "--resume", str(tmp_path)]))
    assert resumed.precise_bn == 0 and {key: resumed.to_dict()[key] for key in old} == old
    assert train_config(build_parser().parse_args(["train", "--resume", str(tmp_path), "--precise-bn", "64"])
                        ).precise_bn == 64  # a flag still wins (and fit refuses it as a changed recipe)


def test_every_flag_named_after_a_config_key_is_generated_from_it():
    # config in layers, flags generated from the config's fields: a flag written by hand drifts (lr-find's
    # --batch-size once had no help at all, study's --tensorboard no --no-tensorboard)
    from dataclasses import fields

    from mnist_ops.cli import build_parser
    from mnist_ops.config import Config

    helps = {"--" + field.name.replace("_", "-"): field.metadata["help"] for field in fields(Config)
             if field.name != "preset"}  # --preset picks the first layer, and is no key of it
    checked = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if name not in ("predict", "serve"):  # their --model is a model.onnx file, not the config key
                        walk(sub, [*path, name])
            for flag in action.option_strings:
                if flag in helps:
                    assert action.help.startswith(helps[flag] + " (default: "), (path, flag, action.help)
                    checked.append((*path, flag))

    walk(build_parser(), [])
    assert {("lr-find", "--batch-size"), ("study", "--tensorboard"), ("summary", "--dropout"), ("summary", "--model"), ("evaluate", "--device"),
            ("data", "fetch", "--dataset"), ("data", "preview", "--seed"), ("train", "--lr")} <= set(checked)


def test_every_option_of_every_command_says_what_it_does():
    from mnist_ops.cli import build_parser

    silent = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.option_strings and not action.help:
                silent.append((*path, action.option_strings[0]))

    walk(build_parser(), [])
    assert silent == []  # --data-root of five commands, lr-find's --start-lr and --end-lr once had no help


def test_an_interrupt_while_starting_says_to_run_again_and_leaves_no_empty_run(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    import mnist_ops.train

    def stopped_while_starting(config, out, **kwargs):
        Path(out).mkdir(exist_ok=True)  # fit made the directory, and was stopped before config.toml
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_ops.train, "fit", stopped_while_starting)
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--preset", "seed-lean", "--out", str(tmp_path / "run")])
    assert stopped.value.code == 130 and not (tmp_path / "run").exists()
    assert capsys.readouterr().err == "mnist-ops: interrupted before the run started; run the same command again\n"
    (tmp_path / "mine").mkdir()  # a directory the user made: left where it is
    with pytest.raises(SystemExit):
        main(["train", "--preset", "seed-lean", "--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine").is_dir()


@pytest.mark.integration
def test_sigterm_stops_a_run_as_ctrl_c_does_and_exits_143(tmp_path, mnist_root):
    import os
    import signal
    import time

    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "mnist_ops", "train", "--preset", "seed-lean", "--epochs", "50",
                                "--limit-train", "2000", "--out", str(run), "--data-root", str(mnist_root),
                                "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:  # the first epoch is done
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.splitlines()[-1] == f"mnist-ops: interrupted; continue with `mnist-ops train --resume {run}`"


def test_runs_started_in_the_same_second_without_out_get_directories_of_their_own(tmp_path, monkeypatch):
    import time
    from pathlib import Path

    import mnist_ops.train

    used = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20261127-180000")  # one second for all three
    monkeypatch.setattr(mnist_ops.train, "fit", lambda config, out, **kwargs: used.append(Path(out)))
    for _ in range(3):
        assert main(["train", "--preset", "seed-lean"]) == 0
    assert used == [Path("runs/seed-lean-seed1-20261127-180000"), Path("runs/seed-lean-seed1-20261127-180000-2"),
                    Path("runs/seed-lean-seed1-20261127-180000-3")]
    assert all(path.is_dir() for path in used)

    def missing_data(config, out, **kwargs):
        raise UserError("mnist not found")

    monkeypatch.setattr(mnist_ops.train, "fit", missing_data)
    assert main(["train", "--preset", "seed-lean"]) == 2
    assert not Path("runs/seed-lean-seed1-20261127-180000-4").exists()  # made for the run, removed when it failed


@pytest.mark.parametrize("command", [["evaluate", "--checkpiont", "run"], ["export", "--chekpoint", "run"],
                                     ["predict", "--chekpoint", "run", "digit.png"]])
def test_a_mistyped_required_flag_gets_a_did_you_mean(command, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(command)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert f"; {command[1]} is not a flag (did you mean '--checkpoint'?)" in err


def test_an_abbreviated_flag_argparse_takes_is_not_called_a_typo(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--ou", "m.onnx"])  # --ou is --out to argparse; --checkpoint is what is missing
    err = capsys.readouterr().err
    assert "required: --checkpoint" in err and "is not a flag" not in err


def test_summary_builds_the_net_for_a_data_set_of_ones_own(tmp_path, capsys):
    from idx_data import write_idx_dataset

    write_idx_dataset(tmp_path, (12, 6), size=(20, 24))
    assert main(["summary", "--model", "fast-8k", "--dataset", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[1, 3]" in out and "| 20*24 |" in out  # 3 scores; the table runs on 20 x 24 images
    assert main(["summary", "--model", "lean-8k", "--dataset", str(tmp_path)]) == 2  # its pool is built for 28 x 28
    assert "fails on a batch of shape [2, 1, 20, 24]" in capsys.readouterr().err


def test_data_stats_shows_class_names_however_short(tmp_path, capsys):
    from idx_data import write_idx_dataset

    write_idx_dataset(tmp_path, (6, 4), classes=2)
    (tmp_path / "dataset.toml").write_text('classes = ["a", "bee"]\n')
    assert main(["data", "stats", "--dataset", str(tmp_path), "--root", str(tmp_path / "root")]) == 0
    rows = capsys.readouterr().out.splitlines()[-2:]
    assert rows[0].split() == ["0", "a", "3", "2"] and rows[1].split() == ["1", "bee", "3", "2"]


@pytest.mark.integration
def test_a_run_whose_data_set_moved_says_where_to_put_it_back(tmp_path, capsys):
    """Evaluate and --resume of a run on a data set of one's own that was moved said "pass a registered name or a
    directory", which neither command takes (an audit)."""
    from idx_data import write_idx_dataset

    data = write_idx_dataset(tmp_path / "shapes", (64, 16), classes=3)
    run = tmp_path / "run"
    assert main(["train", "--preset", "lean-2k", "--model", "fast-8k", "--dataset", str(data), "--epochs", "1",
                 "--batch-size", "16", "--out", str(run), "--no-progress"]) == 0
    data.rename(tmp_path / "moved")
    capsys.readouterr()
    for command in (["evaluate", "--checkpoint", str(run)], ["train", "--resume", str(run)]):
        assert main(command) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"mnist-ops: error: {run} trained on the data set in {data}, which is no longer there; put its four IDX "
            "files back in that directory (a run evaluates and resumes on the data it trained on)"]


@pytest.mark.integration
def test_evaluate_refuses_a_data_set_whose_class_count_changed(tmp_path, capsys):
    """A net trained on 4 classes (dataset.toml), evaluated after that file was removed (3 classes from the
    labels): the confusion matrix was built for 3 and raised "shape '[3, 3]' is invalid" (a review)."""
    from idx_data import write_idx_dataset

    data = write_idx_dataset(tmp_path / "shapes", (64, 16), classes=3)
    (data / "dataset.toml").write_text('classes = ["a", "b", "c", "d"]\n')
    run = tmp_path / "run"
    assert main(["train", "--preset", "lean-2k", "--model", "fast-8k", "--dataset", str(data), "--epochs", "1",
                 "--batch-size", "16", "--out", str(run), "--no-progress"]) == 0
    assert main(["evaluate", "--checkpoint", str(run)]) == 0
    (data / "dataset.toml").unlink()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mnist-ops: error: {data} has 3 classes now, and the checkpoint's model was trained on 4: the data set (or "
        "its dataset.toml) changed since training; restore it, or train again"]


@pytest.mark.parametrize("changes, problem", [({"image_size": "x"}, "bad image_size"),
                                              ({"classes": [1, 2]}, "bad classes")])
def test_evaluate_refuses_a_damaged_record_of_what_the_model_was_trained_on(altered_checkpoint, capsys, changes,
                                                                            problem):
    """image_size "x" ended evaluate in an IndexError traceback; predict and export refused it (a review)."""
    path = altered_checkpoint("damaged.pt", **changes)
    assert main(["evaluate", "--checkpoint", str(path)]) == 2
    assert capsys.readouterr().err == (f"mnist-ops: error: checkpoint {path} is not an mnist-ops checkpoint "
                                       f"({problem})\n")


@pytest.mark.parametrize("failure, code, message", [
    (OSError(28, "No space left on device"), 2, "No space left on device"),
    (KeyboardInterrupt(), 130, "mnist-ops: interrupted before the run started; run the same command again"),
])
@pytest.mark.parametrize("out", [True, False])
def test_a_run_stopped_before_its_config_is_written_leaves_no_directory(mnist_root, tmp_path, capsys, monkeypatch,
                                                                        failure, code, message, out):
    """A full disk or Ctrl-C before config.toml was written left the directory holding .lock alone: one more stray
    runs/<preset>-seed1-<time> at each try without --out (a review)."""
    import mnist_ops.train

    write = mnist_ops.train.atomic_write_bytes

    def failing(path, content):
        if Path(path).name == "config.toml":
            raise failure
        write(path, content)

    monkeypatch.setattr(mnist_ops.train, "atomic_write_bytes", failing)
    monkeypatch.chdir(tmp_path)
    command = ["train", "--preset", "lean-2k", "--epochs", "1", "--limit-train", "256", "--data-root",
               str(mnist_root), "--no-progress"]
    if out:
        command += ["--out", str(tmp_path / "runs" / "mine")]
    if code == 130:
        with pytest.raises(SystemExit) as stopped:
            main(command)
        assert stopped.value.code == code
    else:
        assert main(command) == code
    assert message in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.integration
def test_a_run_whose_out_another_run_took_meanwhile_leaves_that_run_whole(mnist_root, tmp_path, capsys, monkeypatch):
    """Two `train --out X` started together: the one that found X taken once it held the lock took X for its own
    (checked seconds before, X was not there) and deleted the other run's config.toml (a review of a fix)."""
    import mnist_ops.train

    out = tmp_path / "run"
    command = ["train", "--preset", "lean-2k", "--epochs", "1", "--limit-train", "256", "--data-root",
               str(mnist_root), "--no-progress", "--out", str(out)]
    real = mnist_ops.train.load_fit_data

    def meanwhile(*args, **kwargs):  # while this one loads its data, the other trains into X and ends
        monkeypatch.setattr(mnist_ops.train, "load_fit_data", real)
        assert main(command) == 0
        return real(*args, **kwargs)

    monkeypatch.setattr(mnist_ops.train, "load_fit_data", meanwhile)
    assert main(command) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "config.toml").is_file() and (out / "environment.json").is_file()
    assert main(["evaluate", "--checkpoint", str(out)]) == 0


@pytest.mark.integration
def test_a_run_refused_in_its_first_epoch_leaves_no_directory(mnist_root, tmp_path, capsys, monkeypatch):
    """A net of one's own that fails only in train mode left .lock, config.toml and environment.json: a run
    directory with nothing to resume or read (an audit). A directory of the user's own is left where it is."""
    monkeypatch.setenv("MNIST_OPS_TRUSTED_MODELS", str(tmp_path / "trusted"))
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n        self.head = nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n\n"
        "    def forward(self, x):\n        if self.training:\n            raise RuntimeError('boom when training')\n"
        "        return self.head(x)\n")
    common = ["train", "--preset", "seed-baseline", "--model", f"{tmp_path / 'nets.py'}:Net", "--epochs", "1",
              "--limit-train", "256", "--data-root", str(mnist_root), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "run")]) == 2
    assert "raised RuntimeError: boom when training while training in epoch 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()
    assert main([*common, "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir()
