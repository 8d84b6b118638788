import os
import subprocess
import sys
import tempfile
from datetime import timedelta

import pytest
from hypothesis import settings

from mnist_ops.data import DATASETS, default_root

# Fuzz tests (test_fuzz_*) run under a fixed, repeatable profile: the same examples on every run and
# machine, no example database. benchmarks/fuzz_soak.py runs the same properties under "soak".
# The deadline is the "never hangs" bound: each example takes milliseconds, the deadline is far above
# (10 s, so that a 2-core machine loaded by other tests does not turn a slow example into a failure).
settings.register_profile("mnist-ops", max_examples=100, derandomize=True, database=None, print_blob=True,
                          deadline=timedelta(seconds=10))
settings.register_profile("soak", max_examples=int(os.environ.get("MNIST_OPS_SOAK_EXAMPLES", 5000)),
                          derandomize=False, database=None, print_blob=True, deadline=timedelta(seconds=5))


def pytest_configure(config):
    if not config.getoption("--hypothesis-profile", default=None):
        settings.load_profile("mnist-ops")
    # models the tests train are trusted in a file of this test session, not in ~/.config
    os.environ.setdefault("MNIST_OPS_TRUSTED_MODELS",
                          os.path.join(tempfile.mkdtemp(prefix="mnist-ops-trust-"), "trusted-models"))


@pytest.fixture
def small_filesystem(tmp_path):
    """`small_filesystem(kilobytes)`: a real tmpfs of that size (a full disk to test against). Mounting
    needs root; where it is refused the test skips (tests/test_fileio.py also fails a write by hand)."""
    mounted = []

    def mount(kilobytes: int):
        mount_point = tmp_path / f"small{len(mounted)}"
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(mount_point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'})")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def two_threads():
    """torch on 2 threads for one test, whatever OMP_NUM_THREADS says (make test sets 1): a test that checks
    the thread count is restored after one-thread-per-copy training needs a count other than 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist_root():
    """The real MNIST files, placed by `mnist-ops data fetch` (the test command runs it first)."""
    root = default_root()
    missing = [name for name in DATASETS["mnist"].md5 if not (root / "mnist" / name).is_file()]
    if missing:
        pytest.fail(f"MNIST not found under {root}: run `mnist-ops data fetch` first (missing {missing})")
    return root


STUDENT_NET = '''
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """As a course student writes it: two convs, two linear layers, a log_softmax head."""

    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(32 * 5 * 5, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, 32 * 5 * 5)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def build(width=8, num_classes=10):
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
'''


@pytest.fixture
def student_net(tmp_path):
    """A student's model file, `nets.py`, with `Net` (log_softmax head) and `build(width, num_classes)`."""
    path = tmp_path / "student" / "nets.py"
    path.parent.mkdir()
    path.write_text(STUDENT_NET)
    return path


@pytest.fixture
def installed_package(tmp_path, monkeypatch):
    """A package `mnist_zoo` 1.0, installed as pip would leave it: a dist-info with an entry point."""
    site = tmp_path / "site"
    (site / "mnist_zoo").mkdir(parents=True)
    (site / "mnist_zoo" / "__init__.py").write_text(
        "from torch import nn\n"
        "def tiny(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    info = site / "mnist_zoo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mnist-zoo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mnist_ops.models]\nzoo-tiny = mnist_zoo:tiny\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("mnist_zoo", None)


@pytest.fixture(scope="session")
def digit_checkpoint(mnist_root, tmp_path_factory):
    """A real lean-8k checkpoint for test_predict, test_export and test_serve: one epoch on the first
    10,000 training images at batch 32 (about 97.5% test accuracy, ~10 s on one thread)."""
    from mnist_ops.presets import build_config
    from mnist_ops.train import fit

    out = tmp_path_factory.mktemp("lean-8k") / "run"
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 10_000, "batch_size": 32,
                                            "ema": 0.0})  # an EMA of 0.999 is still near the initial weights after one short epoch
    fit(config, out, data_root=mnist_root, log=lambda line: None, progress=False)
    return out / "last.pt"


@pytest.fixture(scope="session")
def onnx_model(digit_checkpoint, tmp_path_factory):
    """`digit_checkpoint` exported by `mnist-ops export`."""
    from mnist_ops.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(digit_checkpoint, out)
    return out


@pytest.fixture
def altered_checkpoint(digit_checkpoint, tmp_path):
    """Writes `digit_checkpoint` again as a diverged or hand-edited run leaves it: `weights` maps each float
    tensor of the model, keywords replace entries (mean, std). Returns the new file's path."""
    import torch

    def write(name: str, weights=None, **changes):
        checkpoint = torch.load(digit_checkpoint, weights_only=True)
        if weights is not None:
            checkpoint["model"] = {key: weights(tensor) if tensor.is_floating_point() else tensor
                                   for key, tensor in checkpoint["model"].items()}
        checkpoint.update(changes)
        torch.save(checkpoint, tmp_path / name)
        return tmp_path / name

    return write


@pytest.fixture
def edited_onnx(onnx_model, tmp_path):
    """Writes `onnx_model` again with metadata entries replaced, as a hand-edited file holds them;
    dynamic_outputs leaves its output count to the first answer. Returns the new file's path."""
    import onnx

    def write(name: str, dynamic_outputs: bool = False, **metadata: str):
        model = onnx.load(onnx_model)
        props = {prop.key: prop.value for prop in model.metadata_props} | metadata
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        if dynamic_outputs:
            model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
        onnx.save(model, tmp_path / name)
        return tmp_path / name

    return write


@pytest.fixture(scope="session")
def mnist_test(mnist_root):
    from mnist_ops.data import load_split

    return load_split("mnist", "test", mnist_root)


def grayscale_png(side: int, rows: int) -> bytes:
    """An 8-bit grayscale PNG whose header says side x side, holding `rows` black rows of pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    data = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def broken_exif_sevens(mnist_test) -> dict[str, bytes]:
    """Test digit 0 (a 7), dark on white, 5x enlarged, as files whose EXIF does not parse: a PNG's and a WebP's
    (Pillow parses theirs only when asked for the orientation), a PNG's whose directory lies past its end (Pillow
    warns), and a JPEG's orientation of two values (Pillow warns on opening)."""
    import io
    import struct
    import zlib

    from PIL import Image

    seven = Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140)).convert("RGB")

    def saved(kind: str, **options) -> bytes:
        buffer = io.BytesIO()
        seven.save(buffer, kind, **options)
        return buffer.getvalue()

    def png_exif(exif: bytes) -> bytes:  # an eXIf chunk right after IHDR
        plain = saved("PNG")
        chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
        return plain[:33] + chunk + plain[33:]

    jpeg = saved("JPEG", quality=95)
    orientation = (b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHII", 0x0112, 3, 2, 0x10001)
                   + bytes(4))
    return {"garbage.png": png_exif(b"garbage-not-tiff"), "garbage.webp": saved("WEBP", exif=b"garbage-not-tiff"),
            "past-its-end.png": png_exif(b"II*\x00\xff\x00\x00\x00"),
            "two-orientations.jpg": jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(orientation) + 2) + orientation
            + jpeg[2:]}


@pytest.fixture(scope="session")
def bomb_png():
    """A real decompression bomb: a 65 KB PNG that decodes to 8192 x 8192 = 67 megapixels."""
    return grayscale_png(8192, 8192)


@pytest.fixture(scope="session")
def giant_pngs():
    """Headers past Pillow's own bomb limits, no pixel data to speak of: 10,000 squared pixels (over
    Pillow's 89M-pixel warning) and 100,000 squared (over its 179M-pixel error)."""
    return {side: grayscale_png(side, 1) for side in (10_000, 100_000)}


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on a free loopback port (tests/pg_server.py), removed after."""
    from pg_server import PostgresServer, skip_reason

    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def train_only_root(mnist_root, tmp_path):
    """A data root holding MNIST's training files only: a command that reads the test set fails on it."""
    from mnist_ops.data import dataset_info

    root = tmp_path / "train-only" / "mnist"
    root.mkdir(parents=True)
    for name in dataset_info("mnist").split_files("train"):
        (root / name).symlink_to(mnist_root / "mnist" / name)
    return root.parent
