import json
import re
import sys
from pathlib import Path

import pytest
import torch

from mnist_ops.errors import UserError
from mnist_ops.presets import build_config
from mnist_ops.engine import load_checkpoint
from mnist_ops.train import epoch_config, fit
from run_records import learned


def quiet(message):
    pass


@pytest.mark.integration
def test_one_epoch_of_seed_lean_on_10k_images_reaches_95_percent(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"epochs": 1, "limit_train": 10_000, "augment": "none",
                                              "schedule": "onecycle", "lr": 0.05, "batch_size": 32})
    summary = fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False)
    assert summary["last_test_accuracy"] >= 95.0
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.toml", "metrics.jsonl", "curves.png", "summary.txt", "last.pt"} <= files
    assert "best.pt" not in files  # the seed's rule: nothing before epoch 3
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["metrics"]["test_accuracy"] == pytest.approx(summary["last_test_accuracy"], abs=1e-4)
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_same_seed_gives_identical_metrics(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"epochs": 2, "limit_train": 1_500, "validation": 1_000, "seed": 5})
    for name in ("a", "b"):
        fit(config, tmp_path / name, data_root=mnist_root, log=quiet, progress=False)

    assert learned(tmp_path / "a") == learned(tmp_path / "b")
    assert len(learned(tmp_path / "a")) == 2
    other = fit(config.replace(seed=6), tmp_path / "c", data_root=mnist_root, log=quiet, progress=False)
    assert learned(tmp_path / "c") != learned(tmp_path / "a") and other["epochs"] == 2


@pytest.mark.integration
def test_best_pt_is_the_best_of_the_epochs_it_may_hold(mnist_root, tmp_path, monkeypatch):
    """An epoch before 3 (never saved, by the seed's rule) above every later one kept best.pt from being written."""
    import mnist_ops.train as train_module

    accuracies = iter([99.0, 99.3, 99.62, 99.5, 99.55, 99.45])
    real = train_module.evaluate

    def scripted(*args, **kwargs):
        result = real(*args, **kwargs)
        result.accuracy = next(accuracies)
        return result

    monkeypatch.setattr(train_module, "evaluate", scripted)
    config = build_config("lean-2k", None, {"epochs": 6, "limit_train": 256, "validation": 500, "target_accuracy": 99.4})
    summary = fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 4  # 99.55: the best of epochs 3-5
    assert summary["best_epoch"] == 2  # the summary still names the best epoch of all


@pytest.mark.integration
def test_fast_mode_bf16_channels_last_trains(mnist_root, tmp_path):
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 3_000, "precision": "bf16",
                                            "channels_last": True, "augment": "none", "batch_size": 32,
                                            "lr": 0.05, "ema": 0.0})  # the preset's EMA barely moves in 94 steps
    summary = fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False)
    assert summary["last_test_accuracy"] >= 85.0


@pytest.mark.integration
def test_plain_epochs_turn_augmentation_off_in_the_last_epochs_only(mnist_root, tmp_path):
    config = build_config("lean-8k-fast", None, {"epochs": 2, "limit_train": 1000, "validation": 500,
                                                 "batch_size": 64, "plain_epochs": 0})
    for name, changes in [("augmented", {}), ("plain-last", {"plain_epochs": 1}), ("plain-all", {"plain_epochs": 2}),
                          ("none", {"augment": "none"})]:
        fit(config.replace(**changes), tmp_path / name, data_root=mnist_root, log=quiet, progress=False)
    augmented, plain_last = learned(tmp_path / "augmented"), learned(tmp_path / "plain-last")
    assert plain_last[0] == augmented[0]  # the first epoch is augmented as before
    assert plain_last[1]["train_loss"] < augmented[1]["train_loss"]  # plain images are the easier ones
    assert learned(tmp_path / "plain-all") == learned(tmp_path / "none")


@pytest.mark.integration
def test_precise_bn_trains_the_same_and_saves_the_statistics_of_plain_training_images(mnist_root, tmp_path):
    from mnist_ops.batches import load_fit_data, normalize
    from mnist_ops.engine import model_from_checkpoint, recompute_batchnorm
    from mnist_ops.replicas import one_thread_per_replica

    config = build_config("lean-8k-fast", None, {"epochs": 2, "limit_train": 1000, "validation": 500,
                                                 "batch_size": 64, "target_accuracy": 0.0})
    messages = []
    fit(config.replace(precise_bn=0), tmp_path / "running", data_root=mnist_root, log=quiet, progress=False)
    fit(config.replace(precise_bn=256), tmp_path / "precise", data_root=mnist_root, log=messages.append, progress=False)
    run_line = next(message for message in messages if message.startswith("run "))
    assert "BatchNorm statistics recomputed over 256 plain training images before each evaluation" in run_line
    running, precise = learned(tmp_path / "running"), learned(tmp_path / "precise")
    assert [record["train_loss"] for record in precise] == [record["train_loss"] for record in running]
    assert [record["val_loss"] for record in precise] != [record["val_loss"] for record in running]

    checkpoint = load_checkpoint(tmp_path / "precise" / "last.pt")
    data = load_fit_data(config, mnist_root)
    model = model_from_checkpoint(checkpoint).to(memory_format=torch.channels_last)
    plain = normalize(data.train.images[:256], data.mean, data.std).contiguous(memory_format=torch.channels_last)
    with one_thread_per_replica(config.replicas):  # as fit runs the pass: sums over a batch depend on the threads
        recompute_batchnorm(model, plain, torch.device("cpu"), config.batch_size, config.precision)
    assert all(torch.equal(value, checkpoint["model"][key]) for key, value in model.state_dict().items())
    other = load_checkpoint(tmp_path / "running" / "last.pt")["model"]
    assert not torch.equal(other["conv1.bn.running_mean"], checkpoint["model"]["conv1.bn.running_mean"])


@pytest.mark.integration
def test_precise_bn_takes_every_training_image_when_fewer_and_is_refused_for_a_net_without_batchnorm(mnist_root,
                                                                                                    tmp_path):
    config = build_config("lean-8k-fast", None, {"epochs": 1, "limit_train": 300, "validation": 500, "batch_size": 30,
                                                 "precise_bn": 5120})  # the preset's, on a small training set
    messages = []
    fit(config, tmp_path / "small", data_root=mnist_root, log=messages.append, progress=False)
    assert "recomputed over 300 plain training images" in next(message for message in messages
                                                               if message.startswith("run "))
    config = build_config("seed-baseline", None, {"epochs": 1, "limit_train": 100, "precise_bn": 50})
    with pytest.raises(UserError, match="^precise_bn = 50 recomputes BatchNorm statistics, and model seed-baseline "
                                        "has no BatchNorm; set precise_bn = 0$"):
        fit(config, tmp_path / "plain-net", data_root=mnist_root, log=quiet, progress=False)
    assert not (tmp_path / "plain-net").exists()  # refused before the run directory, as bad data is


@pytest.mark.parametrize("cycles, plain", [(1, 0), (1, 2), (2, 1), (2, 2), (4, 1)])
def test_plain_epochs_end_every_cycle(cycles, plain):
    config = build_config("lean-8k-fast", None, {"epochs": 8, "cycles": cycles, "plain_epochs": plain})
    cycle = ["seed"] * (8 // cycles - plain) + ["none"] * plain
    assert [epoch_config(config, epoch).augment for epoch in range(8)] == cycle * cycles


def test_missing_data_leaves_no_run_directory(tmp_path):
    config = build_config("seed-lean", None, {"epochs": 1})
    with pytest.raises(UserError, match="mnist-ops data fetch"):
        fit(config, tmp_path / "run", data_root=tmp_path / "empty-root", log=quiet, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_fast_dropout_training_repeats_and_learns(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"epochs": 1, "limit_train": 3_000, "batch_size": 32, "lr": 0.05,
                                              "fast_dropout": True, "augment": "none"})
    summaries = [fit(config, tmp_path / name, data_root=mnist_root, log=quiet, progress=False) for name in "ab"]
    assert summaries[0]["last_test_accuracy"] == summaries[1]["last_test_accuracy"] >= 85.0
    assert "FastDropout" in (tmp_path / "a" / "summary.txt").read_text()


def write_shapes_dataset(directory, train_count=900, test_count=300, seed=0):
    """Three classes of 28x28 strokes at random places: horizontal, vertical, diagonal; written as IDX."""
    from mnist_ops.idx import write_idx

    generator = torch.Generator().manual_seed(seed)
    for name, count in (("train", train_count), ("t10k", test_count)):
        labels = torch.randint(0, 3, (count,), generator=generator)
        images = torch.randint(0, 40, (count, 28, 28), generator=generator).to(torch.uint8)
        for index, label in enumerate(labels.tolist()):
            row, column = torch.randint(4, 20, (2,), generator=generator).tolist()
            if label == 0:
                images[index, row:row + 2, column - 4:column + 8] = 255
            elif label == 1:
                images[index, row - 4:row + 8, column:column + 2] = 255
            else:
                for step in range(10):
                    images[index, row - 4 + step, column - 4 + step] = 255
        write_idx(directory / f"{name}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{name}-labels-idx1-ubyte", labels.to(torch.uint8))


@pytest.mark.integration
def test_training_on_a_directory_of_idx_files_takes_its_classes(tmp_path, capsys, monkeypatch):
    from mnist_ops.cli import main

    write_shapes_dataset(tmp_path / "shapes")
    (tmp_path / "shapes" / "dataset.toml").write_text('classes = ["horizontal", "vertical", "diagonal"]\n')
    monkeypatch.chdir(tmp_path)
    # no EMA and SGD: 14 steps in all, where the EMA lags and the preset's Muon reached 86.7% (SGD: >= 90%)
    assert main(["train", "--preset", "lean-8k", "--ema", "0", "--optimizer", "sgd", "--dataset", "shapes", "--epochs",
                 "2", "--data-root", str(tmp_path / "root"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["config"]["dataset"] == str(tmp_path / "shapes")  # recorded by its absolute path
    assert checkpoint["model_source"]["kwargs"] == {"dropout": 0.0, "num_classes": 3}
    capsys.readouterr()
    monkeypatch.chdir("/")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert "horizontal: " in out and "diagonal: " in out
    assert float(out.split("test accuracy ")[1].split("%")[0]) >= 90.0, out


class Interrupted(Exception):
    pass


def _stop_after(epoch_to_stop: int):
    def on_epoch(epoch, record):
        if epoch == epoch_to_stop:
            raise Interrupted
    return on_epoch


@pytest.mark.integration
@pytest.mark.parametrize("preset, changes", [
    ("seed-lean", {}),  # dropout masks from torch's generator
    ("seed-lean", {"fast_dropout": True}),  # FastDropout's seeds
    ("lean-8k-fast", {"model": "lean-8k", "optimizer": "sgd", "plain_epochs": 0}),  # two model copies, bf16, NHWC
    ("lean-8k", {"ema": 0.9}),  # the average resumes too (lean-8k-fast below resumes precise BN's statistics)
    ("lean-8k-fast", {"plain_epochs": 0}),  # Muon's momentum buffers, with replicas
    ("lean-8k-fast", {}),  # the race itself: stopped after epoch 3, resumed at epoch 4, its plain one
    ("lean-8k-fast", {"epochs": 6, "cycles": 2}),  # stopped after the second cycle's first epoch, resumed in it
])
def test_a_run_stopped_after_an_epoch_and_resumed_equals_the_uninterrupted_run(mnist_root, tmp_path, preset,
                                                                                 changes):
    config = build_config(preset, None, {"epochs": 5, "limit_train": 1000, "validation": 500, "target_accuracy": 0.0,
                                         "batch_size": 64, **changes})
    fit(config, tmp_path / "straight", data_root=mnist_root, log=quiet, progress=False)
    with pytest.raises(Interrupted):
        fit(config, tmp_path / "resumed", data_root=mnist_root, log=quiet, progress=False, on_epoch=_stop_after(3))
    fit(config, tmp_path / "resumed", data_root=mnist_root, log=quiet, progress=False, resume=True)

    assert learned(tmp_path / "resumed") == learned(tmp_path / "straight")
    assert len(learned(tmp_path / "straight")) == config.epochs
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(tmp_path / "straight" / name), load_checkpoint(tmp_path / "resumed" / name)
        assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _momentum_of_another_shape(checkpoint):
    state = checkpoint["optimizer"]["state"]
    first = next(iter(state))
    state[first]["momentum_buffer"] = torch.zeros(3)


@pytest.mark.integration
@pytest.mark.parametrize("ema, damage, problem", [
    (0.0, _momentum_of_another_shape, r"optimizer momentum_buffer of shape \(3,\) for a parameter of shape"),
    (0.0, lambda c: c["scheduler"].update(optimizer=None), "its lr schedule state is not this schedule's"),
    (0.0, lambda c: c["scheduler"].update(total_steps="many"), "its lr schedule state is not this schedule's"),
    (0.0, lambda c: c["scheduler"].update(base_lrs=["x"]), "its lr schedule state is not this schedule's"),
    (0.0, lambda c: c.update(history=[{"epoch": 3}]), "its history is not one record per epoch"),
    (0.0, lambda c: c.update(best_accuracy="high"), "its best accuracy or epoch is not a number"),
    (0.0, lambda c: c["random_states"].update(generator=torch.zeros(2)), "RNG state must be a torch.ByteTensor"),
    (0.0, lambda c: c["optimizer"]["param_groups"].append(c["optimizer"]["param_groups"][0]),
     "its optimizer settings are not this optimizer's"),
    (0.0, lambda c: c["optimizer"]["param_groups"][0].update(lr="x"), "its optimizer settings are not this optimizer's"),
    (0.0, lambda c: c["model"].pop("conv1.conv.weight"), "Missing key"),
    (0.9, lambda c: c.update(ema_updates=-1), "its count of averaged steps is not a count"),
    (0.9, lambda c: c["train_model"].pop("conv1.conv.weight"), "Missing key"),
], ids=["momentum-shape", "scheduler-key", "scheduler-type", "scheduler-list", "history", "best", "random-state",
        "param-groups", "group-lr", "weights", "ema-count", "ema-weights"])
def test_resume_refuses_damaged_state_in_one_line_before_training(mnist_root, tmp_path, ema, damage, problem):
    from mnist_ops.engine import save_checkpoint

    config = build_config("lean-8k", None, {"epochs": 2, "limit_train": 300, "validation": 100, "batch_size": 64,
                                            "ema": ema})
    with pytest.raises(Interrupted):
        fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False, on_epoch=_stop_after(0))
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    damage(checkpoint)
    save_checkpoint(tmp_path / "run" / "last.pt", checkpoint)
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="last.pt holds resume state that does not fit this run") as error:
        fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False, resume=True)
    assert re.search(problem, str(error.value)) and "\n" not in str(error.value)
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before


@pytest.mark.integration
def test_with_ema_the_checkpoint_holds_the_average_and_evaluates_to_the_logged_accuracy(mnist_root, tmp_path):
    from mnist_ops.batches import load_fit_data, normalize
    from mnist_ops.engine import evaluate, model_from_checkpoint

    config = build_config("lean-8k", None, {"epochs": 2, "limit_train": 2000, "validation": 500, "ema": 0.9,
                                            "target_accuracy": 0.0})
    messages = []
    fit(config, tmp_path / "run", data_root=mnist_root, log=messages.append, progress=False)
    assert "evaluating an EMA of the weights (decay 0.9;" in messages[0]  # why epoch 0 can read low
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["ema_updates"] == 2 * 16  # 2,000 images in batches of 128, two epochs
    assert any(not torch.equal(checkpoint["model"][key], checkpoint["train_model"][key]) for key in checkpoint["model"])
    data = load_fit_data(config, mnist_root)
    inputs = normalize(data.evaluation.images, data.mean, data.std)
    result = evaluate(model_from_checkpoint(checkpoint), inputs, data.evaluation.labels, torch.device("cpu"), 1000,
                      config.precision)
    assert result.correct == checkpoint["metrics"]["val_correct"]  # what was logged is what the file holds


@pytest.mark.integration
def test_a_run_stopped_in_its_first_epoch_refuses_flags_that_change_it(mnist_root, tmp_path):
    """With no last.pt yet, `--resume RUN --lr 0.5` trained at 0.5 and rewrote config.toml, where a run one epoch
    further refused the same flag (a review)."""
    from mnist_ops.config import to_toml

    out = tmp_path / "run"
    out.mkdir()
    config = build_config("lean-2k", None, {"epochs": 1, "limit_train": 300, "validation": 100})
    recorded = to_toml(config.replace(device="cpu").to_dict())
    (out / "config.toml").write_text(recorded)  # what a run killed in its first epoch leaves
    with pytest.raises(UserError, match=r"cannot resume .* with a different config: lr \(0.1 in the run, 0.5 now\) "
                                        r"\(config.toml against your flags\)"):
        fit(config.replace(lr=0.5), out, data_root=mnist_root, log=quiet, progress=False, resume=True)
    assert (out / "config.toml").read_text() == recorded and not (out / "metrics.jsonl").exists()
    assert fit(config, out, data_root=mnist_root, log=quiet, progress=False, resume=True)["epochs"] == 1


@pytest.mark.integration
def test_a_run_started_over_gets_a_new_environment_record(mnist_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "environment.json").write_text(json.dumps({"commit": "older", "threads": 99}))  # killed in epoch 0
    messages = []
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 300, "validation": 100})
    fit(config, out, data_root=mnist_root, log=messages.append, progress=False, resume=True)
    environment = json.loads((out / "environment.json").read_text())
    assert environment["commit"] != "older" and "resumes" not in environment
    assert not any("differ from the run's start" in message for message in messages)
    assert any("holds no finished epoch yet: starting it from the beginning" in message for message in messages)
    (out / "last.pt").unlink()  # metrics.jsonl is written after last.pt: this one was deleted
    kept = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="lists finished epochs in metrics.jsonl but holds no last.pt to resume"):
        fit(config.replace(lr=0.5), out, data_root=mnist_root, log=quiet, progress=False, resume=True)
    assert (out / "metrics.jsonl").read_bytes() == kept  # not started over: the history is kept
    (out / "last.pt").write_bytes(b"PK\x03\x04 cut short")  # a damaged last.pt: the fix is not "pass a last.pt"
    with pytest.raises(UserError) as error:
        fit(config, out, data_root=mnist_root, log=quiet, progress=False, resume=True)
    assert str(error.value) == (f"checkpoint {out / 'last.pt'} is unreadable (RuntimeError); the run cannot be "
                                "resumed from it; start a new run with another --out (its best.pt, if any, is still "
                                "usable)")
    assert (out / "metrics.jsonl").read_bytes() == kept


@pytest.mark.integration
def test_a_onecycle_schedule_torch_cannot_run_leaves_no_run_directory(mnist_root, tmp_path):
    config = build_config("lean-8k-fast", None, {"epochs": 1, "limit_train": 300, "validation": 500, "batch_size": 64})
    with pytest.raises(UserError, match="^schedule onecycle over 5 steps makes torch's OneCycleLR divide by zero"):
        fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_resuming_a_finished_run_leaves_it_exactly_as_it_was(mnist_root, tmp_path):
    """`--resume` of a finished run said "nothing left to train", yet rewrote config.toml (keeping a new
    --tensorboard), added a resume to environment.json and a TensorBoard file each time (an audit)."""
    pytest.importorskip("tensorboard")
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 1000, "validation": 200, "batch_size": 64})
    out = tmp_path / "run"
    fit(config, out, data_root=mnist_root, log=quiet, progress=False)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    messages = []
    summary = fit(config.replace(tensorboard=True), out, data_root=mnist_root, log=messages.append, progress=False,
                  resume=True)
    assert f"{out} is finished (1 of 1 epochs): nothing left to train" in messages
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert summary["epochs"] == 1 and f"seconds: {summary['seconds']}" in (out / "summary.txt").read_text()
    (out / "summary.txt").unlink()  # killed after its last epoch, before the end-of-run files: a resume completes them
    fit(config, out, data_root=mnist_root, log=quiet, progress=False, resume=True)
    assert (out / "summary.txt").read_bytes() == before["summary.txt"]


@pytest.mark.integration
def test_a_run_moved_to_a_machine_with_another_device_resumes_there_with_a_warning(mnist_root, tmp_path):
    # once a dead end: `--resume RUN` asked for the run's "cuda" ("use --device cpu"), and `--device cpu` was
    # refused as a changed config
    config = build_config("lean-8k", None, {"epochs": 2, "limit_train": 300, "validation": 100, "batch_size": 64})
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        fit(config, out, data_root=mnist_root, log=quiet, progress=False, on_epoch=_stop_after(1))
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    checkpoint["config"]["device"] = "cuda"  # as written on a GPU machine
    torch.save(checkpoint, out / "last.pt")
    messages = []
    fit(config.replace(device="cpu"), out, data_root=mnist_root, log=messages.append, progress=False, resume=True)
    assert f"warning: {out} trained on cuda and resumes on cpu: from here its numbers differ in the last digits " \
           "from those the run would have computed there" in messages
    assert [record["epoch"] for record in learned(out)] == [0, 1]
    with pytest.raises(UserError, match=r"cannot resume .* lr \(0.1 in the run, 0.2 now\)"):  # other keys still may not
        fit(config.replace(device="cpu", lr=0.2, epochs=3), out, data_root=mnist_root, log=quiet, progress=False,
            resume=True)


def test_train_crop_is_off_in_the_plain_epochs():
    config = build_config("lean-8k-fast", None, {"epochs": 4, "plain_epochs": 1, "train_crop": 24})
    assert [(epoch_config(config, epoch).augment, epoch_config(config, epoch).train_crop) for epoch in range(4)] == \
        [("seed", 24)] * 3 + [("none", 0)]


@pytest.mark.integration
def test_train_crop_trains_the_augmented_epochs_on_crops_and_is_refused_for_a_net_with_a_fixed_pool(mnist_root,
                                                                                                   tmp_path):
    config = build_config("lean-8k-fast", None, {"epochs": 2, "limit_train": 1000, "validation": 500,
                                                 "batch_size": 64, "precise_bn": 0})
    messages = []
    fit(config.replace(train_crop=22), tmp_path / "crops", data_root=mnist_root, log=messages.append, progress=False)
    fit(config, tmp_path / "whole", data_root=mnist_root, log=quiet, progress=False)
    assert "the augmented epochs on random 22 x 22 crops" in next(message for message in messages
                                                                  if message.startswith("run "))
    crops, whole = learned(tmp_path / "crops"), learned(tmp_path / "whole")
    assert crops[0]["train_loss"] != whole[0]["train_loss"] and len(crops) == 2
    for bad, message in [({"model": "lean-8k", "dropout": 0.0, "train_crop": 22},
                          r"^model lean-8k takes no crop smaller than the images .*; set train_crop = 0, or train "
                          "fast-8k$"),
                         ({"train_crop": 4},  # fast-8k itself: how small it goes (its receptive field is 20)
                          r"^train_crop = 4 is too small for model fast-8k, which takes crops from 20 x 20; raise it"),
                         ({"train_crop": 28}, r"^train_crop = 28 is not smaller than the images \(28 x 28\)")]:
        with pytest.raises(UserError, match=message):
            fit(config.replace(**bad), tmp_path / "refused", data_root=mnist_root, log=quiet, progress=False)
        assert not (tmp_path / "refused").exists()


@pytest.mark.integration
def test_sam_trains_and_says_so(mnist_root, tmp_path):
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 512, "validation": 500, "batch_size": 64,
                                            "ema": 0.0})
    messages = []
    fit(config.replace(sam=0.05), tmp_path / "sam", data_root=mnist_root, log=messages.append, progress=False)
    fit(config, tmp_path / "plain", data_root=mnist_root, log=quiet, progress=False)
    assert "sharpness-aware steps (SAM, rho 0.05: two gradients a step)" in next(message for message in messages
                                                                                if message.startswith("run "))
    assert learned(tmp_path / "sam")[0]["train_loss"] != learned(tmp_path / "plain")[0]["train_loss"]


NETS = '''
import torch
import torch.nn as nn


class TrainOnlyFails(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.head = nn.Linear(784, num_classes)

    def forward(self, x):
        if self.training:
            raise RuntimeError("this net was never tried in train mode")
        return self.head(x.flatten(1))


class Norm1d(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body, self.norm, self.head = nn.Linear(784, 16), nn.BatchNorm1d(16), nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.norm(self.body(x.flatten(1))))


class Counts(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.head = nn.Linear(784, num_classes)

    def forward(self, x):
        return self.head(x.flatten(1)).round().long()


class Bf16(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.head = nn.Linear(784, num_classes)

    def forward(self, x):
        return self.head(x.flatten(1)).to(torch.bfloat16)
'''


@pytest.mark.integration
def test_a_net_of_ones_own_that_fails_in_training_is_one_line_naming_it(mnist_root, tmp_path, monkeypatch):
    (tmp_path / "nets.py").write_text(NETS)
    monkeypatch.setenv("MNIST_OPS_TRUSTED_MODELS", str(tmp_path / "trusted"))

    def train(net, **changes):
        config = build_config("seed-baseline", None, {"model": f"{tmp_path / 'nets.py'}:{net}", "epochs": 1,
                                                      "limit_train": 130, "batch_size": 64, **changes})
        return fit(config, tmp_path / net, data_root=mnist_root, log=quiet, progress=False)

    with pytest.raises(UserError, match=r"^model .*nets.py:TrainOnlyFails raised RuntimeError: this net was never "
                                        r"tried in train mode while training in epoch 0; fix its forward\(\)"):
        train("TrainOnlyFails")
    with pytest.raises(UserError, match=r"raised ValueError: Expected more than 1 value per channel .* the epoch's "
                                        r"last batch holds 1 image, and BatchNorm cannot train on 1"):
        train("Norm1d", limit_train=129)
    with pytest.raises(UserError, match=r"TrainOnlyFails raised RuntimeError: .* fix its forward\(\)"):
        train("TrainOnlyFails", limit_train=129)  # a last batch of 1, but not what failed: no BatchNorm hint

    import mnist_ops.train as train_module

    def broken_batches(*args, **kwargs):
        raise RuntimeError("a bug in the batches, not in the net")

    monkeypatch.setattr(train_module, "fit_batches", broken_batches)
    with pytest.raises(RuntimeError, match="a bug in the batches"):  # not blamed on the net: the traceback stays
        train("Norm1d")
    with pytest.raises(UserError, match=r"returns torch.int64 scores; return floating-point logits"):
        train("Counts")


@pytest.mark.integration
def test_a_net_with_bf16_scores_exports_to_float32_scores(mnist_root, tmp_path, monkeypatch):
    import numpy as np

    from mnist_ops.data import load_split
    from mnist_ops.export import export_onnx
    from mnist_ops.predict import OnnxPredictor

    (tmp_path / "nets.py").write_text(NETS)
    monkeypatch.setenv("MNIST_OPS_TRUSTED_MODELS", str(tmp_path / "trusted"))
    config = build_config("seed-baseline", None, {"model": f"{tmp_path / 'nets.py'}:Bf16", "epochs": 1,
                                                  "limit_train": 256, "batch_size": 64})
    fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False)
    export_onnx(tmp_path / "run" / "last.pt", tmp_path / "m.onnx")
    digits = load_split("mnist", "test", mnist_root).images[:8].numpy()
    probabilities = OnnxPredictor(tmp_path / "m.onnx").probabilities(digits)
    assert probabilities.dtype == np.float32 and probabilities.shape == (8, 10)


@pytest.mark.integration
@pytest.mark.parametrize("reference", ["nets.py:Bf16", "resume_nets.small:Bf16"])
def test_a_run_of_a_relative_model_file_or_a_module_resumes_from_another_directory(mnist_root, tmp_path, monkeypatch,
                                                                                   reference):
    """config.toml keeps the model as typed (nets.py:Net, package.module:build); resuming from elsewhere found no
    nets.py there, and imported no package there."""
    (tmp_path / "work" / "resume_nets").mkdir(parents=True)
    (tmp_path / "work" / "nets.py").write_text(NETS)
    (tmp_path / "work" / "resume_nets" / "__init__.py").write_text("")
    (tmp_path / "work" / "resume_nets" / "small.py").write_text(NETS)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("MNIST_OPS_TRUSTED_MODELS", str(tmp_path / "trusted"))
    monkeypatch.chdir(tmp_path / "work")
    config = build_config("seed-baseline", None, {"model": reference, "epochs": 2, "limit_train": 256,
                                                  "batch_size": 64})
    with pytest.raises(Interrupted):
        fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False, on_epoch=_stop_after(0))
    for name in ("resume_nets.small", "resume_nets"):  # resumed in a new process: imported afresh
        sys.modules.pop(name, None)
    monkeypatch.chdir(tmp_path / "elsewhere")
    summary = fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False, resume=True)
    assert summary["epochs"] == 2 and len(learned(tmp_path / "run")) == 2
    assert reference in (tmp_path / "run" / "config.toml").read_text()
    sys.modules.pop("resume_nets.small", None)
    sys.modules.pop("resume_nets", None)


@pytest.mark.integration
@pytest.mark.parametrize("reference", ["nets.py:Bf16", "changing_nets.small:Bf16"])
def test_resume_refuses_a_model_file_edited_since_the_run_started(mnist_root, tmp_path, monkeypatch, reference):
    """An edit that keeps the weights' shapes (another activation) resumed without a word, one run of two nets (a
    review); evaluate already refused such a file."""
    (tmp_path / "changing_nets").mkdir()
    (tmp_path / "changing_nets" / "__init__.py").write_text("")
    for path in (tmp_path / "nets.py", tmp_path / "changing_nets" / "small.py"):
        path.write_text(NETS)
    monkeypatch.setenv("MNIST_OPS_TRUSTED_MODELS", str(tmp_path / "trusted"))
    monkeypatch.chdir(tmp_path)
    config = build_config("seed-baseline", None, {"model": reference, "epochs": 2, "limit_train": 256,
                                                  "batch_size": 64})
    with pytest.raises(Interrupted):
        fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False, on_epoch=_stop_after(0))
    edited = Path(reference.split(":")[0] if reference.endswith(".py:Bf16") else "changing_nets/small.py")
    edited.write_text(NETS + "\n# edited\n")
    for name in ("changing_nets.small", "changing_nets"):  # resumed in a new process: imported afresh
        sys.modules.pop(name, None)
    with pytest.raises(UserError, match=r"cannot resume .*run: model .* is built by .* now, sha256 \w{12}, and the run "
                                        r"started with .*sha256 \w{12}; put the original file back"):
        fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False, resume=True)
    assert len(learned(tmp_path / "run")) == 1
    edited.write_text(NETS)  # put back: it resumes
    for name in ("changing_nets.small", "changing_nets"):
        sys.modules.pop(name, None)
    assert fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False, resume=True)["epochs"] == 2
    for name in ("changing_nets.small", "changing_nets"):
        sys.modules.pop(name, None)


@pytest.mark.integration
def test_the_epoch_line_shows_the_lr_of_the_epochs_first_and_last_steps_and_the_record_the_first(mnist_root, tmp_path):
    def shown(config, name):
        lines = []
        fit(config, tmp_path / name, data_root=mnist_root, log=lines.append, progress=False)
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        values = [re.search(r"\| lr (\S+) \|", line).group(1) for line in lines if line.startswith("epoch ")]
        assert [value.split("→")[0] for value in values] == [f"{record['lr']:.4g}" for record in records]
        return [[float(part) for part in value.split("→")] for value in values]

    config = build_config("lean-2k", None, {"epochs": 4, "limit_train": 512, "validation": 100, "batch_size": 64})
    one = shown(config, "one")  # 8 steps an epoch: the warm-up (a fifth of the steps) ends in epoch 0
    assert all(len(pair) == 2 for pair in one) and one[0][1] > one[0][0] and one[3][1] < one[3][0]
    assert one[3][1] < config.lr / 100  # the last step anneals to near 0
    two = shown(config.replace(cycles=2), "two")  # the second cycle restarts at epoch 2
    assert two[1][1] < config.lr / 100 and two[2][0] == pytest.approx(one[0][0], rel=1e-3)
    assert shown(config.replace(schedule="constant"), "flat") == [[config.lr]] * 4
