"""Read and write IDX files (the MNIST file format), raw or gzip-compressed.

Layout: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions, then one big-endian uint32 per dimension, then the data.

Reading trusts nothing in the file: the header's size is checked (with Python ints, so a
shape that claims terabytes cannot overflow) before any data is read, and the data is read in
chunks up to one byte past the declared size. A lying header or a gzip bomb never makes the
reader allocate more than the smaller of the header's claim and what the file really holds.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch

from mnist_ops.errors import UserError
from mnist_ops.fileio import atomic_write_bytes

UNSIGNED_BYTE = 0x08
MAX_DIMS = 16  # MNIST-format files have 1 (labels) or 3 (images); numpy stops at 64
MAX_DATA_BYTES = 2**31  # 2 GiB, about 45x MNIST's training images: a larger header is corrupt
CHUNK = 1 << 16  # bytes read at a time


def _header(content: bytes | bytearray, name: str) -> tuple[tuple[int, ...], int, int]:
    """(shape, header size, data size) from the start of an IDX file; UserError if the header is bad."""
    if len(content) < 4:
        raise UserError(f"{name}: too short to be an IDX file ({len(content)} bytes)")
    if content[0] != 0 or content[1] != 0:
        raise UserError(f"{name}: bad magic number {bytes(content[:4]).hex()}: not an IDX file")
    if content[2] != UNSIGNED_BYTE:
        raise UserError(f"{name}: IDX data type 0x{content[2]:02x} is not supported (only 0x08, unsigned byte)")
    ndim = content[3]
    if ndim == 0:
        raise UserError(f"{name}: IDX header declares zero dimensions")
    if ndim > MAX_DIMS:
        raise UserError(f"{name}: IDX header declares {ndim} dimensions, more than {MAX_DIMS}: not an IDX file "
                        "this reader handles")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise UserError(f"{name}: truncated header ({len(content)} bytes, need {header_size})")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    # Python ints: no overflow. Zero-sized dimensions are skipped so that (0, 2**32-1, ...) is caught too.
    if math.prod(size for size in shape if size) > MAX_DATA_BYTES:
        raise UserError(f"{name}: IDX header declares shape {shape}, more than the {MAX_DATA_BYTES:,} bytes "
                        "this reader accepts: the file is corrupt; replace it with a good copy")
    return shape, header_size, math.prod(shape)


def parse_idx(content: bytes | bytearray, name: str = "<bytes>") -> torch.Tensor:
    """Parse IDX bytes into a uint8 tensor, checking magic number, dimensions and size.

    A `bytearray` is used in place (the tensor shares its memory); `bytes` are copied.
    """
    shape, header_size, expected = _header(content, name)
    found = len(content) - header_size
    if found < expected:
        raise UserError(f"{name}: truncated: shape {shape} needs {expected} data bytes, found {found}")
    if found > expected:
        raise UserError(f"{name}: unexpected bytes after the {expected} data bytes of shape {shape}")
    array = np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _read_header(handle: BinaryIO) -> bytearray:
    """The header's bytes (fewer if the file is not IDX or is truncated: _header says which)."""
    content = bytearray(handle.read(4))
    if len(content) == 4 and content[:3] == bytes([0, 0, UNSIGNED_BYTE]):
        content += handle.read(4 * content[3])
    return content


def _read_bounded(handle: BinaryIO, name: str) -> bytearray:
    """The header, then at most one byte more than the data size it declares, in chunks."""
    content = _read_header(handle)
    _, header_size, data_size = _header(content, name)
    remaining = header_size + data_size + 1 - len(content)  # the extra byte tells "too long" from "exact"
    while remaining > 0 and (chunk := handle.read(min(CHUNK, remaining))):
        content += chunk
        remaining -= len(chunk)
    return content


def gunzip_idx(content: bytes, name: str = "<bytes>") -> bytearray:
    """Decompress a gzipped IDX file, stopping one byte past the size its header declares: a gzip
    bomb is never inflated. Raises UserError (bad header), OSError, EOFError or zlib.error."""
    with gzip.GzipFile(fileobj=io.BytesIO(content)) as handle:
        return _read_bounded(handle, name)


GZIP_MAGIC = b"\x1f\x8b"  # an IDX file starts with two zero bytes, so the two never clash


def _read_file(path: Path, read: Callable[[BinaryIO, str], bytearray]) -> bytearray:
    """Decompressed by content, not by name: a browser that unpacks a download keeps its `.gz` name, and a
    gzipped file can lose it."""
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            with (gzip.GzipFile(fileobj=raw) if compressed else contextlib.nullcontext(raw)) as handle:
                return read(handle, str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path}: cannot read ({error}); replace it with a good copy") from None


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read a raw or `.gz` IDX file into a uint8 tensor."""
    return parse_idx(_read_file(Path(path), _read_bounded), str(path))


def read_idx_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """A raw or `.gz` IDX file's shape, from its header alone (checked as read_idx checks it)."""
    path = Path(path)
    return _header(_read_file(path, lambda handle, name: _read_header(handle)), str(path))[0]


def encode_idx(tensor: torch.Tensor) -> bytes:
    if tensor.dtype != torch.uint8:
        raise ValueError(f"only uint8 tensors can be written as IDX, got {tensor.dtype}")
    header = bytes([0, 0, UNSIGNED_BYTE, tensor.dim()])
    header += b"".join(int(size).to_bytes(4, "big") for size in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as IDX; gzip-compressed when the name ends in `.gz`."""
    content = encode_idx(tensor)
    if str(path).endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    atomic_write_bytes(path, content)
