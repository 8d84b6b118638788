import json

import pytest
import torch
import torch.nn.functional as F

from mnist_ops.batches import normalize
from mnist_ops.cli import main
from mnist_ops.distill import distillation_loss, load_teacher
from mnist_ops.engine import TrainStep, load_checkpoint, make_optimizer, model_from_checkpoint
from mnist_ops.models import create_model
from mnist_ops.presets import build_config
from mnist_ops.train import fit


def rewritten(checkpoint_path, out, **changes):
    """A copy of a checkpoint with some top-level values (or, under "config", config values) changed."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    config_changes = changes.pop("config", {})
    checkpoint.update(changes)
    checkpoint["config"] = {**checkpoint["config"], **config_changes}
    torch.save(checkpoint, out)
    return out


def test_the_soft_term_is_t_squared_kl_per_sample_and_zero_when_the_student_agrees():
    torch.manual_seed(0)
    student, other = torch.randn(6, 10), torch.randn(6, 10)
    for temperature in (1.0, 4.0):
        agreeing = F.softmax(student / temperature, dim=1)
        assert distillation_loss(student, agreeing, temperature).abs() < 1e-6
        teacher = F.softmax(other / temperature, dim=1)
        log_student = F.log_softmax(student / temperature, dim=1)
        expected = (teacher * (teacher.log() - log_student)).sum(dim=1).mean() * temperature ** 2
        assert torch.allclose(distillation_loss(student, teacher, temperature), expected, atol=1e-6)
        assert distillation_loss(student, teacher, temperature) > 0.1


def test_teacher_files_split_on_commas_and_are_recorded_absolute(tmp_path, monkeypatch):
    from mnist_ops.config import teacher_files

    monkeypatch.chdir(tmp_path)
    config = build_config("lean-8k", None, {"teacher": "a/last.pt, b/best.pt", "distill_weight": 0.5})
    assert teacher_files(config.teacher) == [str(tmp_path / "a" / "last.pt"), str(tmp_path / "b" / "best.pt")]


def test_teachers_average_their_probabilities_each_in_its_own_normalization(digit_checkpoint, mnist_test, tmp_path):
    """A teacher trained with another mean/std gets the student's inputs converted into its own."""
    other = rewritten(digit_checkpoint, tmp_path / "other.pt", mean=0.2, std=0.25)
    config = build_config("lean-8k", None, {"teacher": f"{digit_checkpoint},{other}", "distill_weight": 0.5,
                                            "distill_temperature": 2.0})
    student_mean, student_std = 0.1, 0.4
    teacher = load_teacher(config, student_mean, student_std, torch.device("cpu"))
    images = mnist_test.images[:64]
    got = teacher.probabilities(normalize(images, student_mean, student_std))
    expected = []
    for path in (digit_checkpoint, other):
        checkpoint = load_checkpoint(path)
        model = model_from_checkpoint(checkpoint).eval()
        with torch.no_grad():
            logits = model(normalize(images, checkpoint["mean"], checkpoint["std"]))
        expected.append(F.softmax(logits / 2.0, dim=1))
    assert torch.allclose(got, (expected[0] + expected[1]) / 2, atol=1e-4)
    assert torch.allclose(got.sum(dim=1), torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("replicas", [1, 2])
def test_with_distill_weight_one_the_step_learns_from_the_teacher_alone(digit_checkpoint, replicas):
    """Weight 1: the labels drop out of the loss, so shuffled labels give the same step; weight 0.5: they do not."""
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    after = {}
    for weight in (1.0, 0.5):
        config = build_config("lean-8k", None, {"teacher": str(digit_checkpoint), "distill_weight": weight,
                                                "replicas": replicas, "ema": 0.0})
        teacher = load_teacher(config, 0.1307, 0.3081, torch.device("cpu"))
        for labels in (y, y.flip(0)):
            torch.manual_seed(0)
            model = create_model("lean-8k", dropout=0.0)
            step = TrainStep(model, make_optimizer(config, model), config, teacher=teacher)
            try:
                _, loss = step(x, labels)
            finally:
                step.close()
            after[weight, tuple(labels.tolist())] = (loss, [p.detach().clone() for p in model.parameters()])
        reference = model_from_checkpoint(load_checkpoint(digit_checkpoint))
        for folded in teacher.models:  # the teachers only ever run forward: their weights never move
            assert all(not p.requires_grad or p.grad is None for p in folded.parameters())
        assert torch.allclose(teacher.models[0](x), reference.eval()(x), atol=1e-4)
    for weight, same in ((1.0, True), (0.5, False)):
        (loss_a, weights_a), (loss_b, weights_b) = after[weight, tuple(y.tolist())], after[weight, tuple(y.flip(0).tolist())]
        assert (torch.equal(loss_a, loss_b) and all(map(torch.equal, weights_a, weights_b))) == same


def test_train_step_refuses_a_teacher_the_config_does_not_weigh():
    config = build_config("lean-8k", None, {})
    model = create_model("lean-8k", dropout=0.0)
    with pytest.raises(ValueError, match="exactly when distill_weight > 0"):
        TrainStep(model, make_optimizer(config, model), config, teacher=object())


def test_fit_distills_and_records_the_teacher(digit_checkpoint, mnist_root, tmp_path):
    flags = {"epochs": 1, "limit_train": 2_000, "batch_size": 64, "ema": 0.0}
    lines = []
    plain = fit(build_config("lean-8k", None, flags), tmp_path / "plain", mnist_root, log=lambda line: None,
                progress=False)
    distilled = fit(build_config("lean-8k", None, {**flags, "teacher": str(digit_checkpoint), "distill_weight": 0.7}),
                    tmp_path / "distilled", mnist_root, log=lines.append, progress=False)
    assert any(line.startswith(f"teacher {digit_checkpoint}: lean-8k, epoch 0, test accuracy") for line in lines)
    assert any("distilling 1 teacher(s) (weight 0.7, temperature 4.0)" in line for line in lines)
    assert plain["last_test_accuracy"] != distilled["last_test_accuracy"]
    recorded = (tmp_path / "distilled" / "config.toml").read_text()
    assert f'teacher = "{digit_checkpoint}"' in recorded and "distill_weight = 0.7" in recorded
    record = json.loads((tmp_path / "distilled" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train_loss"] > 0


def refusal(capsys, tmp_path, mnist_root, *flags):
    out = tmp_path / "run"
    code = main(["train", "--preset", "lean-8k", "--epochs", "1", "--limit-train", "500", *flags,
                 "--out", str(out), "--data-root", str(mnist_root), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and "Traceback" not in error, error
    assert not out.exists()  # refused before the run directory
    return error


def test_train_refuses_a_teacher_without_a_weight_and_a_weight_without_a_teacher(digit_checkpoint, mnist_root,
                                                                                tmp_path, capsys):
    assert "a teacher needs distill_weight > 0" in refusal(capsys, tmp_path, mnist_root, "--teacher",
                                                           str(digit_checkpoint))
    assert "distill_weight = 0.5 needs a teacher" in refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5")


def test_train_refuses_a_teacher_that_is_missing_or_trained_on_other_data(digit_checkpoint, mnist_root, tmp_path,
                                                                         capsys):
    missing = refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5", "--teacher", str(tmp_path / "nope.pt"))
    assert missing.startswith("mnist-ops: error: teacher: checkpoint") and "not found" in missing
    fashion = rewritten(digit_checkpoint, tmp_path / "fashion.pt", config={"dataset": "fashion-mnist"})
    other = refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5", "--teacher", str(fashion))
    assert "was trained on fashion-mnist, this run trains on mnist" in other


def test_train_refuses_a_teacher_file_it_cannot_read(digit_checkpoint, mnist_root, tmp_path, capsys, monkeypatch):
    # permissions do not stop root, so the read itself fails here, as it would for a file without read access
    from pathlib import Path

    read_bytes = Path.read_bytes

    def refuse(path):
        if path.name == "teacher.pt":
            raise PermissionError(13, "Permission denied")
        return read_bytes(path)

    teacher = rewritten(digit_checkpoint, tmp_path / "teacher.pt")
    monkeypatch.setattr(Path, "read_bytes", refuse)
    error = refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5", "--teacher", str(teacher))
    assert error == f"mnist-ops: error: teacher {teacher} is unreadable (Permission denied); pass a readable checkpoint"


def test_train_refuses_a_teacher_that_saw_the_validation_images(digit_checkpoint, mnist_root, tmp_path, capsys):
    """The teacher trained on all 60,000 training images: distilling it would leak the held-out ones."""
    error = refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5", "--teacher", str(digit_checkpoint),
                    "--validation", "5000")
    assert "held out no training images, this run validates on 5,000" in error and "--validation 5000" in error
    held_out = rewritten(digit_checkpoint, tmp_path / "held.pt", config={"validation": 4000})
    error = refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5", "--teacher", str(held_out),
                    "--validation", "5000")
    assert "held out 4,000 training images" in error
    # the same count from the other end of the file: 495 of the last 500 are among a random 500's training images
    random_held = rewritten(digit_checkpoint, tmp_path / "random.pt", config={"validation": 5000})
    error = refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5", "--teacher", str(random_held),
                    "--validation", "5000", "--validation-from", "last")
    assert ("held out the random 5,000 training images, this run validates on the last 5,000" in error
            and "--validation-from last" in error)
    last_held = rewritten(digit_checkpoint, tmp_path / "last.pt",
                          config={"validation": 5000, "validation_from": "last"})
    config = build_config("lean-8k", None, {"teacher": str(last_held), "distill_weight": 0.5, "validation": 5000,
                                            "validation_from": "last"})
    assert load_teacher(config, 0.1307, 0.3081, torch.device("cpu")) is not None


def test_a_resume_refuses_teacher_files_that_changed_since_the_run_started(digit_checkpoint, mnist_root, tmp_path):
    import hashlib

    from mnist_ops.errors import UserError

    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(digit_checkpoint.read_bytes())
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 1_000, "batch_size": 64, "ema": 0.0,
                                            "teacher": str(teacher), "distill_weight": 0.5})
    out = tmp_path / "run"
    fit(config, out, mnist_root, log=lambda line: None, progress=False)
    saved = torch.load(out / "last.pt", weights_only=True)["teachers"]
    assert saved == {str(teacher): hashlib.sha256(teacher.read_bytes()).hexdigest()}
    lines = []
    fit(config, out, mnist_root, log=lines.append, progress=False, resume=True)  # the same file: resumes
    assert any("is finished" in line for line in lines)
    rewritten(digit_checkpoint, teacher, mean=0.2)  # another teacher at the same path
    with pytest.raises(UserError, match=r"teacher .*teacher.pt changed since the run started \(sha256 [0-9a-f]{12} "
                                        r"then, [0-9a-f]{12} now\); put the original file back"):
        fit(config, out, mnist_root, log=lambda line: None, progress=False, resume=True)


def test_an_earlier_epoch_is_refused_as_teacher_only_when_picked_on_the_images_this_run_is_judged_on(
        digit_checkpoint, mnist_root, tmp_path, capsys):
    """A best.pt (epoch 0 of 3 here) was picked by its evaluation accuracy: on the test set, if its run had no
    validation split. A student judged on the test set must not learn from it; one of a held-out split may."""
    picked_on_test = rewritten(digit_checkpoint, tmp_path / "best.pt", config={"epochs": 3})
    error = refusal(capsys, tmp_path, mnist_root, "--distill-weight", "0.5", "--teacher", str(picked_on_test))
    assert "holds epoch 0 of 3 (numbered from 0): an epoch picked by its accuracy on the test set" in error
    assert "pass the last.pt of a finished run" in error
    picked_on_validation = rewritten(digit_checkpoint, tmp_path / "val-best.pt",
                                     config={"epochs": 3, "validation": 5000})
    config = build_config("lean-8k", None, {"teacher": str(picked_on_validation), "distill_weight": 0.5})
    assert load_teacher(config, 0.1307, 0.3081, torch.device("cpu")) is not None


def test_a_run_directory_teaches_with_its_last_epoch_not_its_best(digit_checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(digit_checkpoint.read_bytes())
    rewritten(digit_checkpoint, run / "best.pt", mean=0.2)
    teacher = load_teacher(build_config("lean-8k", None, {"teacher": str(run), "distill_weight": 0.5}),
                           0.1307, 0.3081, torch.device("cpu"))
    assert list(teacher.checksums) == [str(run / "last.pt")]


def test_a_run_started_before_checkpoints_recorded_their_teachers_still_resumes(digit_checkpoint, mnist_root,
                                                                              tmp_path):
    config = build_config("lean-8k", None, {"epochs": 2, "limit_train": 500, "batch_size": 64, "ema": 0.0,
                                            "teacher": str(digit_checkpoint), "distill_weight": 0.5})
    out = tmp_path / "run"

    def killed(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # stopped after epoch 0 of 2
        fit(config, out, mnist_root, log=lambda line: None, progress=False, on_epoch=killed)
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    del checkpoint["teachers"]  # as an older mnist-ops wrote it
    torch.save(checkpoint, out / "last.pt")
    summary = fit(config, out, mnist_root, log=lambda line: None, progress=False, resume=True)
    assert summary["epochs"] == 2
    assert torch.load(out / "last.pt", weights_only=True)["teachers"] == {
        str(digit_checkpoint): __import__("hashlib").sha256(digit_checkpoint.read_bytes()).hexdigest()}
