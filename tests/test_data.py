import gzip
import json
import tracemalloc
import zlib

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
    assert "by hand" in message and f"`mnist-ops data fetch --dataset tiny --root {root}` to verify" in message
    assert f"data root {root / 'tiny'}: none of the 4 files there;" in message  # one reason, not four
    assert "apt-get install" not in message  # no Debian package ships this one
    assert not (root / "tiny" / "t10k-labels-idx1-ubyte").exists()  # a bad file is never stored
    assert (root / "tiny" / "train-images-idx3-ubyte").exists()  # the good ones are


def test_load_split_refuses_missing_and_corrupt_files(tiny_dataset):
    files, root = tiny_dataset
    with pytest.raises(UserError, match=f"missing; run `mnist-ops data fetch --dataset tiny --root {root}`"):
        data.load_split("tiny", "train", root)
    data.fetch("tiny", root, log=lambda m: None, use_network=False)
    path = root / "tiny" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match=f"fails its MD5 check.*`mnist-ops data fetch --dataset tiny --root {root}`"):
        data.load_split("tiny", "train", root)


def test_an_empty_name_or_a_file_is_not_a_dataset_directory(tmp_path):
    with pytest.raises(UserError, match="unknown dataset ''"):  # not the current directory
        data.dataset_info("")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(UserError, match=f"is a file; pass the directory that holds the four IDX files \\({tmp_path}"):
        data.dataset_info(str(tmp_path / "train-images-idx3-ubyte"))


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


# ---------------------------------------------------------------------------- your own data

def write_dataset(directory, names, train_labels, test_labels, size=(28, 28), test_size=None, seed=0):
    """Four IDX files named `names` (train images, train labels, test images, test labels); returns the
    upright images as written."""
    from mnist_ops.idx import write_idx

    generator = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (len(train_labels), *size), dtype=torch.uint8, generator=generator)
    test = torch.randint(0, 256, (len(test_labels), *(test_size or size)), dtype=torch.uint8, generator=generator)
    for name, tensor in zip(names, (train, torch.tensor(train_labels, dtype=torch.uint8),
                                    test, torch.tensor(test_labels, dtype=torch.uint8))):
        write_idx(directory / name, tensor)
    return train, test


MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte")
EMNIST_NAMES = tuple(f"emnist-digits-{split}-{kind}-idx{1 if kind == 'labels' else 3}-ubyte.gz"
                     for split in ("train", "test") for kind in ("images", "labels"))


def test_a_directory_of_idx_files_is_a_dataset_with_classes_from_its_labels(tmp_path):
    train, test = write_dataset(tmp_path, MNIST_NAMES, [0, 1, 2, 1, 0], [2, 0], size=(20, 24))
    info = data.dataset_info(str(tmp_path))
    assert info.classes == ("0", "1", "2") and info.directory == tmp_path.resolve() and not info.transposed
    split = data.load_split(str(tmp_path), "train")
    assert torch.equal(split.images, train) and split.labels.tolist() == [0, 1, 2, 1, 0]
    assert torch.equal(data.load_split(str(tmp_path), "test").images, test)


def test_a_data_sets_files_are_decompressed_by_content_not_by_name(tmp_path):
    """A browser that unpacks a download keeps the .gz name; a gzipped file can lose it: both load."""
    import gzip

    train, test = write_dataset(tmp_path, MNIST_NAMES, [0, 1, 2, 1, 0], [2, 0])
    raw, packed = tmp_path / MNIST_NAMES[0], tmp_path / MNIST_NAMES[1]  # written raw, and gzipped
    raw.write_bytes(gzip.compress(raw.read_bytes()))  # now gzipped under a raw name
    packed.write_bytes(gzip.decompress(packed.read_bytes()))  # now raw under a .gz name
    split = data.load_split(str(tmp_path), "train")
    assert torch.equal(split.images, train) and split.labels.tolist() == [0, 1, 2, 1, 0]


@pytest.mark.parametrize("classes, message", [('["a", "a", "b"]', "holds names 'a' more than once"),
                                              ('["a", " ", "b"]', "holds an empty name"),
                                              ('["only"]', "1 class\\(es\\), from the 1 classes in dataset.toml")])
def test_class_names_must_be_distinct_and_a_data_set_needs_two_classes(tmp_path, classes, message):
    write_dataset(tmp_path, MNIST_NAMES, [0, 0, 0], [0])
    (tmp_path / "dataset.toml").write_text(f"classes = {classes}\n")
    with pytest.raises(UserError, match=message):
        data.dataset_info(str(tmp_path))
    (tmp_path / "dataset.toml").unlink()  # one class from the labels alone: refused too
    with pytest.raises(UserError, match=r"1 class\(es\), from the train labels \(0..0\); a classifier needs at least 2"):
        data.dataset_info(str(tmp_path))


def test_a_stray_label_far_above_the_others_is_refused_unless_the_classes_are_listed(tmp_path):
    """One label of 255 among 0-9 made 256 classes, 245 of them empty, without a word (an audit); labels 5-7
    (8 classes, 5 empty) stay a data set."""
    write_dataset(tmp_path, MNIST_NAMES, [*range(10), 255], [0, 1])
    with pytest.raises(UserError, match=r"the train labels run to 255, but only 11 of those 256 values occur: a "
                                        r"stray label\? Fix the labels, or list the classes in .*dataset.toml"):
        data.dataset_info(str(tmp_path))
    (tmp_path / "dataset.toml").write_text(f"classes = {[str(index) for index in range(256)]}\n".replace("'", '"'))
    assert len(data.dataset_info(str(tmp_path)).classes) == 256
    write_dataset(tmp_path / "high", MNIST_NAMES, [5, 6, 7, 5], [6])
    assert len(data.dataset_info(str(tmp_path / "high")).classes) == 8


def test_dataset_toml_names_classes_and_checks_md5s(tmp_path):
    write_dataset(tmp_path, MNIST_NAMES, [0, 1, 0], [1, 1])
    digest = data.md5_of((tmp_path / MNIST_NAMES[0]).read_bytes())
    (tmp_path / "dataset.toml").write_text(f'classes = ["cat", "dog", "fish", "owl"]\n'
                                           f'[md5]\n"{MNIST_NAMES[0]}" = "{digest}"\n')
    assert data.dataset_info(str(tmp_path)).classes == ("cat", "dog", "fish", "owl")
    assert len(data.load_split(str(tmp_path), "train")) == 3
    (tmp_path / "dataset.toml").write_text(f'[md5]\n"{MNIST_NAMES[0]}" = "{"0" * 32}"\n')
    with pytest.raises(UserError, match="train-images-idx3-ubyte fails its MD5 check"):
        data.load_split(str(tmp_path), "train")


def test_emnist_images_are_stored_transposed_and_load_upright(tmp_path):
    upright = torch.zeros(1, 28, 28, dtype=torch.uint8)
    upright[0, 2:26, 13:15] = 255  # a vertical stroke: a "1" standing upright
    from mnist_ops.idx import write_idx

    write_idx(tmp_path / EMNIST_NAMES[0], upright.transpose(1, 2).contiguous())  # as EMNIST stores it
    write_idx(tmp_path / EMNIST_NAMES[1], torch.tensor([1], dtype=torch.uint8))
    write_idx(tmp_path / EMNIST_NAMES[2], upright.transpose(1, 2).contiguous())
    write_idx(tmp_path / EMNIST_NAMES[3], torch.tensor([1], dtype=torch.uint8))
    assert data.dataset_info(str(tmp_path)).transposed
    assert torch.equal(data.load_split(str(tmp_path), "train").images, upright)
    (tmp_path / "dataset.toml").write_text("transposed = false\n")
    assert torch.equal(data.load_split(str(tmp_path), "test").images, upright.transpose(1, 2))


@pytest.mark.parametrize("case, message", [
    ("label outside classes", r"train label 5 is outside the 3 classes in dataset.toml"),
    ("test label unseen", r"test label 4 is outside the train labels \(0..2\)"),
    ("count mismatch", r"train split has 4 images .* but 3 labels"),
    ("size mismatch", r"train images are 28x28 but test images 32x32"),
    ("missing file", r"no test labels file \(an IDX file named like t10k-labels-idx1-ubyte"),
    ("two files", r"several train images files"),
    ("empty test split", r"the test split has no images \(t10k-images-idx3-ubyte.gz\)"),
    ("empty train split", r"the train split has no images \(train-images-idx3-ubyte\)"),
    ("zero-width images", r"holds images of 28x0 pixels; an image needs at least one row and one column"),
])
def test_bad_directories_are_one_line_errors(tmp_path, case, message):
    from mnist_ops.idx import write_idx

    train_labels, test_labels = [0, 1, 2, 5] if case == "label outside classes" else [0, 1, 2, 1], [1, 0]
    if case == "test label unseen":
        test_labels = [4, 0]
    train_labels = [] if case == "empty train split" else train_labels
    test_labels = [] if case == "empty test split" else test_labels
    size = (28, 0) if case == "zero-width images" else (28, 28)
    write_dataset(tmp_path, MNIST_NAMES, train_labels, test_labels, size=size,
                  test_size=(32, 32) if case == "size mismatch" else None)
    if case == "label outside classes":
        (tmp_path / "dataset.toml").write_text('classes = ["a", "b", "c"]\n')
    if case == "count mismatch":
        write_idx(tmp_path / MNIST_NAMES[1], torch.tensor([0, 1, 2], dtype=torch.uint8))
    if case == "missing file":
        (tmp_path / MNIST_NAMES[3]).unlink()
    if case == "two files":
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress((tmp_path / MNIST_NAMES[0]).read_bytes()))
    with pytest.raises(UserError, match=message) as error:
        data.load_split(str(tmp_path), "train")
    assert "\n" not in str(error.value)


def test_registry_has_kmnist_and_emnist_digits_with_published_gz_md5s():
    kmnist, emnist = data.DATASETS["kmnist"], data.DATASETS["emnist-digits"]
    assert kmnist.split_files("train") == ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    assert kmnist.md5["t10k-labels-idx1-ubyte.gz"] == "7320c461ea6c1c855c0b718fb2a4b134"
    assert kmnist.classes[:3] == ("o", "ki", "su") and not kmnist.transposed
    assert emnist.split_files("test") == ("emnist-digits-test-images-idx3-ubyte.gz",
                                          "emnist-digits-test-labels-idx1-ubyte.gz")
    assert emnist.transposed and emnist.mirrors == ()


def test_fetch_keeps_gz_files_whose_published_md5_is_of_the_gz(monkeypatch, tmp_path):
    """A registry entry with MD5s of .gz files (KMNIST, EMNIST): verified and stored compressed, loaded upright."""
    system = tmp_path / "system" / "emnist-tiny"
    system.mkdir(parents=True)
    upright, _ = write_dataset(system, EMNIST_NAMES, [3, 1], [0])
    for name in EMNIST_NAMES:  # write_idx's gzip has mtime 0; the stored bytes are what the MD5 covers
        assert (system / name).read_bytes()[:2] == b"\x1f\x8b"
    md5 = {name: data.md5_of((system / name).read_bytes()) for name in EMNIST_NAMES}
    monkeypatch.setitem(data.DATASETS, "emnist-tiny", data.DatasetInfo(
        "emnist-tiny", md5, (), tuple("0123456789"), transposed=True))
    monkeypatch.setattr(data, "SYSTEM_DATASET_DIR", tmp_path / "system")
    root = tmp_path / "root"
    data.fetch("emnist-tiny", root, log=lambda m: None, use_network=False)
    assert (root / "emnist-tiny" / EMNIST_NAMES[0]).read_bytes() == (system / EMNIST_NAMES[0]).read_bytes()
    split = data.load_split("emnist-tiny", "train", root)
    assert torch.equal(split.images, upright.transpose(1, 2)) and split.labels.tolist() == [3, 1]


def test_train_pixel_stats_are_cached_by_file(tmp_path):
    import os

    write_dataset(tmp_path / "own", MNIST_NAMES, [0, 1], [1])
    images = data.load_split(str(tmp_path / "own"), "train").images
    first = data.train_pixel_stats(str(tmp_path / "own"), images, tmp_path / "root")
    assert first == data.pixel_stats(images) and (tmp_path / "root" / "stats.json").is_file()
    assert data.train_pixel_stats(str(tmp_path / "own"), images * 0, tmp_path / "root") == first  # from the cache
    os.utime(tmp_path / "own" / MNIST_NAMES[0], ns=(1, 1))  # the file changed: computed again
    assert data.train_pixel_stats(str(tmp_path / "own"), images * 0, tmp_path / "root") == (0.0, 0.0)


@pytest.mark.parametrize("damage", [
    lambda cache, key: cache[key].update(mean=None),
    lambda cache, key: cache[key].update(std="0.3"),
    lambda cache, key: cache[key].update(std=float("nan")),
    lambda cache, key: cache[key].pop("mean"),
    lambda cache, key: [],  # the whole file a list
])
def test_a_damaged_pixel_stats_cache_is_computed_again(tmp_path, damage):
    """An entry with "mean": null (valid JSON, its file's stamp still matching) was returned as it stood: a TypeError
    in `train` and in `data stats` (a review)."""
    write_dataset(tmp_path / "own", MNIST_NAMES, [0, 1], [1])
    images = data.load_split(str(tmp_path / "own"), "train").images
    expected = data.train_pixel_stats(str(tmp_path / "own"), images, tmp_path / "root")
    cache_path = tmp_path / "root" / "stats.json"
    cache = json.loads(cache_path.read_text())
    damaged = damage(cache, next(iter(cache)))
    cache_path.write_text(json.dumps(cache if damaged is None else damaged, allow_nan=True))
    assert data.train_pixel_stats(str(tmp_path / "own"), images, tmp_path / "root") == expected
    assert next(iter(json.loads(cache_path.read_text()).values()))["mean"] == expected[0]  # written again whole


def test_a_gzip_bomb_in_the_data_root_is_never_inflated(tiny_dataset):
    """64 MB of zeros behind a real header, as a 64 KB .gz: refused after reading the header's size."""
    files, root = tiny_dataset
    name = "train-images-idx3-ubyte"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(files[name]) + b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64))
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / f"{name}.gz").write_bytes(bomb + compressor.flush())
    messages = []
    tracemalloc.start()
    try:
        data.fetch("tiny", root, log=messages.append, use_network=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert (root / "tiny" / name).read_bytes() == files[name]  # the good copy, from the system dir
    assert any(f"{name}: ok (MD5 verified, from system dir" in message for message in messages)


@pytest.mark.parametrize("damage", ["flip deflate data", "bomb"])
def test_a_damaged_gz_in_your_own_dataset_is_one_line_and_never_inflated(tmp_path, damage):
    write_dataset(tmp_path, MNIST_NAMES, [0, 1, 2, 1, 0], [2, 0])
    path = tmp_path / MNIST_NAMES[1]  # train-labels-idx1-ubyte.gz
    if damage == "bomb":  # the real 5-label header, then 64 MB of zeros: a 64 KB file
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        header = gzip.decompress(path.read_bytes())[:8]
        path.write_bytes(compressor.compress(header) + b"".join(compressor.compress(bytes(1 << 20))
                                                                for _ in range(64)) + compressor.flush())
    else:
        content = bytearray(path.read_bytes())
        content[10] ^= 0xFF  # the first byte of the deflate stream: zlib.error
        path.write_bytes(bytes(content))
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as error:
            data.load_split(str(tmp_path), "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(str(error.value).splitlines()) == 1 and "train-labels-idx1-ubyte.gz" in str(error.value)
    assert peak < 8 << 20


def test_a_dataset_debian_ships_is_named_in_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DATASET_DIR", tmp_path / "system")
    with pytest.raises(UserError) as error:
        data.fetch("fashion-mnist", tmp_path / "root", log=lambda m: None, use_network=False)
    message = str(error.value)
    assert f"data root {tmp_path / 'root' / 'fashion-mnist'}: none of the 4 files there; " \
           f"system dir {tmp_path / 'system' / 'fashion-mnist'}: none of the 4 files there. " in message
    assert "Fix: `apt-get install dataset-fashion-mnist`, or place the raw or .gz IDX files in" in message
