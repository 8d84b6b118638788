"""Read and write IDX files (the MNIST file format), raw or gzip-compressed.

Layout: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions, then one big-endian uint32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from mnist_ops.errors import UserError
from mnist_ops.fileio import atomic_write_bytes

UNSIGNED_BYTE = 0x08


def _open_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise UserError(f"{path}: cannot read ({error}); delete it and fetch it again") from None


def parse_idx(content: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Parse IDX bytes into a uint8 tensor, checking magic number, dimensions and size."""
    if len(content) < 4:
        raise UserError(f"{name}: too short to be an IDX file ({len(content)} bytes)")
    if content[0] != 0 or content[1] != 0:
        raise UserError(f"{name}: bad magic number {content[:4].hex()}: not an IDX file")
    if content[2] != UNSIGNED_BYTE:
        raise UserError(f"{name}: IDX data type 0x{content[2]:02x} is not supported (only 0x08, unsigned byte)")
    ndim = content[3]
    if ndim == 0:
        raise UserError(f"{name}: IDX header declares zero dimensions")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise UserError(f"{name}: truncated header ({len(content)} bytes, need {header_size})")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(content) - header_size
    if found < expected:
        raise UserError(f"{name}: truncated: shape {shape} needs {expected} data bytes, found {found}")
    if found > expected:
        raise UserError(f"{name}: {found - expected} unexpected bytes after the data for shape {shape}")
    array = np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)
    return torch.from_numpy(array.copy())


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read a raw or `.gz` IDX file into a uint8 tensor."""
    path = Path(path)
    return parse_idx(_open_bytes(path), str(path))


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
