import gzip

import pytest
import torch

from mnist_ops.errors import UserError
from mnist_ops.idx import encode_idx, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_round_trip_raw_and_gz(tmp_path, name):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    write_idx(tmp_path / name, images)
    assert torch.equal(read_idx(tmp_path / name), images)
    if name.endswith(".gz"):
        assert gzip.decompress((tmp_path / name).read_bytes()) == encode_idx(images)


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


def test_broken_gzip_and_missing_file(tmp_path):
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(UserError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(UserError, match="not found"):
        read_idx(tmp_path / "absent")


def test_write_leaves_no_temp_file(tmp_path):
    write_idx(tmp_path / "a.idx", torch.zeros(3, dtype=torch.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.idx"]
