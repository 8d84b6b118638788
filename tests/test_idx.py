import gzip
import math
import re
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, strategies as st

from mnist_ops.errors import UserError
from mnist_ops.idx import CHUNK, MAX_DATA_BYTES, encode_idx, parse_idx, read_idx, read_idx_shape, write_idx


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_round_trip_raw_and_gz(tmp_path, name):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    write_idx(tmp_path / name, images)
    assert torch.equal(read_idx(tmp_path / name), images)
    if name.endswith(".gz"):
        assert gzip.decompress((tmp_path / name).read_bytes()) == encode_idx(images)


@pytest.mark.parametrize("name", ["labels.idx", "labels.idx.gz"])
def test_shape_from_the_header_alone(tmp_path, name):
    content = encode_idx(torch.zeros(7, 2, 3, dtype=torch.uint8)) + b"\x00"  # a byte the shape does not cover
    (tmp_path / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with pytest.raises(UserError, match="unexpected bytes"):
        read_idx(tmp_path / name)
    assert read_idx_shape(tmp_path / name) == (7, 2, 3)  # the header alone is read


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00\x0d\x01", "data type 0x0d"), (b"\x00\x00\x08\x02\x00", "truncated header"),
    (b"\x01\x02", "too short"), (b"\x00\x00\x08\x01" + (2**32 - 1).to_bytes(4, "big"), "more than"),
])
def test_shape_of_a_bad_header_is_the_same_user_error_as_read_idx(tmp_path, content, message):
    (tmp_path / "bad.idx").write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_idx_shape(tmp_path / "bad.idx")
    with pytest.raises(UserError, match="not found"):
        read_idx_shape(tmp_path / "absent.idx")


def test_header_layout():
    content = encode_idx(torch.arange(6, dtype=torch.uint8).reshape(2, 3))
    assert content[:4] == bytes([0, 0, 8, 2])
    assert content[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert content[12:] == bytes(range(6))


@pytest.mark.parametrize("mutate, message", [
    (lambda c: b"\x01" + c[1:], "bad magic"),
    (lambda c: c[:2] + b"\x0d" + c[3:], "data type"),
    (lambda c: c[:-1], "truncated"),
    (lambda c: c + b"\x00", "unexpected bytes"),
    (lambda c: c[:6], "truncated header"),
    (lambda c: c[:3] + b"\x00", "zero dimensions"),
    (lambda c: b"", "too short"),
])
def test_corruption_is_a_user_error(mutate, message):
    content = encode_idx(torch.zeros(2, 4, 4, dtype=torch.uint8))
    with pytest.raises(UserError, match=message):
        parse_idx(mutate(content), "sample")


def test_compression_is_read_from_the_content_not_the_name(tmp_path):
    """A browser that unpacks a download keeps the `.gz` name; a gzipped file can lose it. Both read."""
    tensor = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    (tmp_path / "raw-idx3-ubyte.gz").write_bytes(encode_idx(tensor))
    (tmp_path / "packed-idx3-ubyte").write_bytes(gzip.compress(encode_idx(tensor)))
    for name in ("raw-idx3-ubyte.gz", "packed-idx3-ubyte"):
        assert torch.equal(read_idx(tmp_path / name), tensor)
        assert read_idx_shape(tmp_path / name) == (2, 3, 4)


def test_broken_gzip_and_missing_file(tmp_path):
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(UserError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(UserError, match="not found"):
        read_idx(tmp_path / "absent")


def test_write_leaves_no_temp_file(tmp_path):
    write_idx(tmp_path / "a.idx", torch.zeros(3, dtype=torch.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.idx"]


# ---------------------------------------------------------------------------- fuzzed (hypothesis)
# Whatever the bytes, the reader returns the tensor the header declares or raises UserError: no other
# exception, no hang (the profile's deadline, tests/conftest.py), and no allocation beyond the input.


SLACK = 4 * CHUNK  # read buffers and bookkeeping on top of the data itself


def _bound(data_bytes: int) -> float:
    """Peak allocation allowed for reading `data_bytes`: the data, a growing buffer's spare room, chunks."""
    return 1.5 * data_bytes + SLACK


DIMENSION = st.one_of(st.integers(0, 5), st.sampled_from([28, 60_000, 2**16, 2**31, 2**32 - 1]),
                      st.integers(0, 2**32 - 1))


@st.composite
def idx_like(draw) -> bytes:
    """A header (right magic or not, dimension count true or not, sizes from 0 to 2**32 - 1), then data
    of about the declared size: exact, one byte off, or any length."""
    magic = draw(st.sampled_from([b"\x00\x00\x08", b"\x00\x00\x09"]) | st.binary(min_size=3, max_size=3))
    shape = draw(st.lists(DIMENSION, max_size=6) | st.integers(0, 255).map(lambda count: [1] * count))
    ndim = draw(st.just(len(shape)) | st.integers(0, 255))
    header = magic + bytes([ndim]) + b"".join(size.to_bytes(4, "big") for size in shape)
    declared = math.prod(shape)
    length = draw(st.sampled_from([declared - 1, declared, declared + 1]).filter(lambda n: 0 <= n <= 4096)
                  | st.integers(0, 4096))
    return header + draw(st.binary(min_size=length, max_size=length))


@st.composite
def mutated_idx(draw) -> bytes:
    """A valid IDX file, then truncated, extended, or with bytes overwritten (the header most often)."""
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    pixels = draw(st.binary(min_size=math.prod(shape), max_size=math.prod(shape)))
    content = bytearray(encode_idx(torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(shape)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["truncate", "extend", "overwrite header", "overwrite"]))
        if action == "truncate":
            del content[draw(st.integers(0, len(content))):]
        elif action == "extend":
            content += draw(st.binary(min_size=1, max_size=64))
        elif content:
            end = min(len(content), 4 + 4 * len(shape)) if action == "overwrite header" else len(content)
            content[draw(st.integers(0, end - 1))] = draw(st.integers(0, 255))
    return bytes(content)


def _header_for(*shape: int) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + b"".join(size.to_bytes(4, "big") for size in shape)


ANY_IDX_BYTES = st.one_of(st.binary(max_size=2048), idx_like(), mutated_idx())


def _traced(function, *args):
    """(result or UserError, peak bytes allocated while it ran), measured by tracemalloc."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        try:
            result = function(*args)
        except UserError as error:
            result = error
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return result, peak


def _check_result(result, content: bytes) -> None:
    """A tensor only when the header's shape accounts for every byte; else a one-line UserError."""
    if isinstance(result, UserError):
        assert len(str(result).splitlines()) == 1
        return
    header_size = 4 + 4 * content[3]
    assert content[:3] == b"\x00\x00\x08"
    assert tuple(result.shape) == tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big")
                                        for i in range(content[3]))
    assert result.dtype == torch.uint8 and result.numpy().tobytes() == content[header_size:]


@given(ANY_IDX_BYTES)
@example(_header_for(2**16, 2**16, 2**16, 2**16))  # 2**64 bytes: 0 in int64 arithmetic
@example(_header_for(0, 2**32 - 1, 2**32 - 1))  # no data, but the strides overflow
@example(_header_for(*[1] * 65) + b"\x00")  # more dimensions than numpy takes
def test_fuzz_parse_idx(content):
    result, peak = _traced(parse_idx, content, "fuzz")
    _check_result(result, content)
    assert peak <= _bound(len(content))


@given(ANY_IDX_BYTES, st.booleans())
def test_fuzz_read_idx_raw_and_gz(content, compress):
    """read_idx of a file holding these bytes (raw or gzipped) agrees with parse_idx of the bytes."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ("fuzz.idx.gz" if compress else "fuzz.idx")
        path.write_bytes(gzip.compress(content, mtime=0) if compress else content)
        result, peak = _traced(read_idx, path)
    _check_result(result, content)
    try:
        expected = parse_idx(content)
    except UserError:
        assert isinstance(result, UserError)
    else:
        assert torch.equal(result, expected)
    assert peak <= _bound(len(content))


@given(idx_like() | mutated_idx(), st.data())
def test_fuzz_read_idx_corrupt_gzip(content, data):
    """A damaged gzip stream (bytes flipped, cut short, or a member appended) is a UserError or, where the
    damage misses the data, the same tensor."""
    compressed = bytearray(gzip.compress(content, mtime=0))
    damage = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if damage == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            compressed[data.draw(st.integers(0, len(compressed) - 1))] ^= data.draw(st.integers(1, 255))
    elif damage == "truncate":
        del compressed[data.draw(st.integers(0, len(compressed) - 1)):]
    else:
        member = st.binary(max_size=32).map(lambda extra: gzip.compress(extra, mtime=0))
        compressed += data.draw(st.binary(max_size=32) | member)  # trailing junk, or a second gzip member
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.idx.gz"
        path.write_bytes(bytes(compressed))
        result, peak = _traced(read_idx, path)
    if isinstance(result, UserError):
        assert len(str(result).splitlines()) == 1
    else:  # the damage missed the data (the gzip header's mtime, say): the CRC held, so did the content
        assert torch.equal(result, parse_idx(content))
    assert peak <= _bound(len(content) + 1024)  # a flipped bit may make the stream inflate to more


def _gzip_stream(header: bytes, zeros: int) -> bytes:
    """gzip of header + `zeros` zero bytes, built chunk by chunk (a 64 MB bomb is about 64 KB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    parts = [compressor.compress(header)]
    chunk = bytes(1 << 20)
    for start in range(0, zeros, len(chunk)):
        parts.append(compressor.compress(chunk[:min(len(chunk), zeros - start)]))
    return b"".join(parts) + compressor.flush()


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("header, zeros, message", [
    pytest.param(_header_for(4, 4), 64 << 20, "unexpected bytes", id="bomb"),  # 64 MB behind 16 bytes
    pytest.param(_header_for(2**32 - 1, 2**32 - 1, 2**32 - 1), 16 << 20, "more than the", id="zettabytes"),
    pytest.param(_header_for(2**16, 2**16, 2**16, 2**16), 0, "more than the", id="int64-wraps-to-0"),
    pytest.param(_header_for(0, 2**32 - 1, 2**32 - 1), 0, "more than the", id="stride-overflow"),
    pytest.param(_header_for(60_000, 28, 28), 1 << 20, "cannot read|truncated", id="ends-early"),
])
def test_bombs_and_lying_headers_stop_early(tmp_path, suffix, header, zeros, message):
    path = tmp_path / f"bomb.idx{suffix}"
    path.write_bytes(_gzip_stream(header, zeros) if suffix else header + bytes(zeros))
    result, peak = _traced(read_idx, path)
    assert isinstance(result, UserError) and re.search(message, str(result))
    assert peak <= _bound(1 << 20)  # at most the 1 MB the truncated file holds, never the claim


def test_header_claim_beyond_the_limit_is_refused_without_reading():
    shape = (MAX_DATA_BYTES + 1,)
    with pytest.raises(UserError, match="more than the"):
        parse_idx(_header_for(*shape))
    data = _header_for(2**31 // 28 // 28, 28, 28)  # within the limit: just truncated
    with pytest.raises(UserError, match="truncated"):
        parse_idx(data)
