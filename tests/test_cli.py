import subprocess
import sys

import pytest
import torch

from mnist_ops.cli import main


def run_cli(*args, env=None):
    """Run the real command in a subprocess: exit code, stdout, stderr."""
    result = subprocess.run([sys.executable, "-m", "mnist_ops", *args], capture_output=True, text=True,
                            env=env, timeout=600)
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
])
def test_user_mistakes_give_one_line_and_exit_2(args, fragments):
    code, _, stderr = run_cli(*args)
    assert_one_line_error(code, stderr, *fragments)


def test_unknown_config_key_and_missing_data(tmp_path, monkeypatch):
    config = tmp_path / "bad.toml"
    config.write_text("epochs = 1\nbatchsize = 64\n")
    code, _, stderr = run_cli("train", "--config", str(config))
    assert_one_line_error(code, stderr, "unknown key(s) batchsize")
    code, _, stderr = run_cli("data", "stats", "--root", str(tmp_path / "empty"))
    assert_one_line_error(code, stderr, "missing", "mnist-ops data fetch")


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"\x00" * 100)
    code, _, stderr = run_cli("evaluate", "--checkpoint", str(tmp_path / "best.pt"))
    assert_one_line_error(code, stderr, "unreadable")


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
    # a second run into the same directory must not overwrite the first
    before = (out / "metrics.jsonl").read_bytes()
    assert main(["train", "--preset", "seed-lean", "--epochs", "1", "--out", str(out),
                 "--data-root", str(mnist_root)]) == 2
    assert (out / "metrics.jsonl").read_bytes() == before
