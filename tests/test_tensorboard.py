import json

import pytest

from mnist_ops.fileio import read_jsonl
from mnist_ops.study import parse_spec, run_study
from mnist_ops.tensorboard import scalar_tags


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


@pytest.mark.integration
def test_a_study_writes_one_tensorboard_run_per_variant_and_seed(mnist_root, student_net, tmp_path):
    spec = parse_spec({
        "name": "boards", "seeds": 1,
        "defaults": {"epochs": 2, "limit_train": 1000, "tensorboard": True, "augment": "none"},
        "variant": [{"name": "lean", "preset": "lean-8k"},
                    {"name": "student", "preset": "seed-baseline", "model": f"{student_net}:Net"}],
    }, "test spec")
    run_study(spec, tmp_path / "study", data_root=mnist_root, log=lambda message: None)
    for variant in ("lean", "student"):
        run = tmp_path / "study" / variant / "seed1"
        records = read_jsonl(run / "metrics.jsonl")
        events = read_events(run)
        tags = events.Tags()
        expected = {"loss/train", "loss/test", "accuracy/train", "accuracy/test", "lr", "images_per_second/train"}
        assert set(scalar_tags(records[0]).values()) == expected and expected <= set(tags["scalars"])
        for field, tag in scalar_tags(records[0]).items():
            logged = events.Scalars(tag)
            assert [e.step for e in logged] == [0, 1]
            assert [e.value for e in logged] == pytest.approx([r[field] for r in records], rel=1e-6)
        assert tags["graph"] is True
        figures = events.Images("misclassified")
        assert [figure.step for figure in figures] == [0, 1]
        assert figures[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_tensorboard_leaves_the_training_unchanged(mnist_root, tmp_path):
    from mnist_ops.presets import build_config
    from mnist_ops.train import fit

    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 1000})
    metrics = []
    for board in (False, True):
        fit(config.replace(tensorboard=board), tmp_path / str(board), mnist_root, log=lambda m: None, progress=False)
        record = json.loads((tmp_path / str(board) / "metrics.jsonl").read_text())
        metrics.append({k: v for k, v in record.items() if k not in ("seconds", "train_images_per_second")})
    assert metrics[0] == metrics[1]
    assert any(path.name.startswith("events.out.tfevents") for path in (tmp_path / "True").iterdir())
    assert not any(path.name.startswith("events.out") for path in (tmp_path / "False").iterdir())


def test_without_the_extra_tensorboard_names_the_install_with_the_tested_versions(tmp_path, monkeypatch):
    import sys

    import torch

    from mnist_ops import tensorboard
    from mnist_ops.errors import UserError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"^--tensorboard needs the tensorboard package: pip install "
                                        r"'mnist-ops\[tensorboard\]' \(from a checkout: pip install -c constraints.txt "
                                        r"-e '\.\[tensorboard\]'\)$"):
        tensorboard.open(tmp_path, torch.nn.Conv2d(1, 1, 3), torch.zeros(1, 1, 4, 4))
    assert not any(tmp_path.iterdir())


@pytest.mark.integration
def test_a_validation_runs_gallery_names_its_validation_images(mnist_root, tmp_path, monkeypatch):
    """A run with a held-out split never loads the test set: its misclassified digits are validation images."""
    from matplotlib.figure import Figure

    from mnist_ops.presets import build_config
    from mnist_ops.train import fit

    titles = []
    original = Figure.suptitle
    monkeypatch.setattr(Figure, "suptitle", lambda self, text, **kw: titles.append(text) or original(self, text, **kw))
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 1000, "validation": 500, "tensorboard": True})
    fit(config, tmp_path / "run", mnist_root, log=lambda m: None, progress=False)
    assert any("misclassified validation images" in title for title in titles), titles
