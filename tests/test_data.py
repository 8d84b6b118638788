import gzip

import pytest
import torch

from mnist_ops import data
from mnist_ops.errors import UserError
from mnist_ops.idx import encode_idx


@pytest.fixture
def tiny_dataset(monkeypatch, tmp_path):
    """A registered 'tiny' dataset whose four files sit gzipped in a fake system dir."""
    files = {
        "train-images-idx3-ubyte": encode_idx(torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)),
        "train-labels-idx1-ubyte": encode_idx(torch.tensor([0, 1, 2, 3, 4, 5], dtype=torch.uint8)),
        "t10k-images-idx3-ubyte": encode_idx(torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)),
        "t10k-labels-idx1-ubyte": encode_idx(torch.tensor([7, 9], dtype=torch.uint8)),
    }
    info = data.DatasetInfo("tiny", {name: data.md5_of(content) for name, content in files.items()},
                            mirrors=("http://127.0.0.1:9/",), classes=tuple("0123456789"))
    monkeypatch.setitem(data.DATASETS, "tiny", info)
    system = tmp_path / "system"
    (system / "tiny").mkdir(parents=True)
    for name, content in files.items():
        (system / "tiny" / f"{name}.gz").write_bytes(gzip.compress(content))
    monkeypatch.setattr(data, "SYSTEM_DATASET_DIR", system)
    return files, tmp_path / "root"


def test_fetch_from_system_dir_verifies_and_stores_raw(tiny_dataset):
    files, root = tiny_dataset
    messages = []
    directory = data.fetch("tiny", root, log=messages.append, use_network=False)
    for name, content in files.items():
        assert (directory / name).read_bytes() == content
    assert any("from system dir" in m for m in messages)
    split = data.load_split("tiny", "train", root)
    assert split.images.shape == (6, 28, 28) and split.images.dtype == torch.uint8
    assert split.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_fetch_uses_files_already_in_root(tiny_dataset, monkeypatch, tmp_path):
    files, root = tiny_dataset
    data.fetch("tiny", root, log=lambda m: None, use_network=False)
    monkeypatch.setattr(data, "SYSTEM_DATASET_DIR", tmp_path / "nowhere")
    messages = []
    data.fetch("tiny", root, log=messages.append, use_network=False)
    assert sum("from data root" in m for m in messages) == 4


def test_fetch_rejects_wrong_checksum_and_lists_every_source(tiny_dataset, monkeypatch):
    files, root = tiny_dataset
    bad = dict(data.DATASETS["tiny"].md5, **{"t10k-labels-idx1-ubyte": "0" * 32})
    monkeypatch.setitem(data.DATASETS, "tiny", data.DatasetInfo("tiny", bad, ("http://127.0.0.1:9/",), tuple("0123456789")))
    with pytest.raises(UserError) as error:
        data.fetch("tiny", root, log=lambda m: None, use_network=True)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and "MD5" in message
    assert "system dir" in message and "mirror http://127.0.0.1:9/" in message
    assert "by hand" in message
    assert not (root / "tiny" / "t10k-labels-idx1-ubyte").exists()  # a bad file is never stored
    assert (root / "tiny" / "train-images-idx3-ubyte").exists()  # the good ones are


def test_load_split_refuses_missing_and_corrupt_files(tiny_dataset):
    files, root = tiny_dataset
    with pytest.raises(UserError, match="missing; run `mnist-ops data fetch --dataset tiny`"):
        data.load_split("tiny", "train", root)
    data.fetch("tiny", root, log=lambda m: None, use_network=False)
    path = root / "tiny" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="fails its MD5 check"):
        data.load_split("tiny", "train", root)


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'cifar'.*mnist"):
        data.dataset_info("cifar")


def test_pixel_stats_match_direct_computation():
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    pixels = images.double() / 255
    mean, std = data.pixel_stats(images)
    assert mean == pytest.approx(pixels.mean().item(), abs=1e-12)
    assert std == pytest.approx(pixels.std().item(), abs=1e-12)


@pytest.mark.integration
def test_real_mnist_statistics(mnist_root):
    train = data.load_split("mnist", "train", mnist_root)
    test = data.load_split("mnist", "test", mnist_root)
    assert len(train) == 60_000 and len(test) == 10_000
    mean, std = data.pixel_stats(train.images)
    assert round(mean, 4) == 0.1307 and round(std, 4) == 0.3081
    assert sum(data.class_counts(train.labels)) == 60_000
    assert data.class_counts(test.labels)[1] == 1135
