import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from mnist_ops.errors import UserError
from mnist_ops.fileio import DirectoryLock, atomic_write_bytes, read_jsonl, remove_stale_temporaries, write_jsonl


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_permissions_of_an_ordinary_new_file(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "file.bin", b"data")
        (tmp_path / "plain.bin").write_bytes(b"data")  # what open() would give, for comparison
    finally:
        os.umask(before)
    assert (tmp_path / "file.bin").stat().st_mode & 0o777 == mode
    assert (tmp_path / "file.bin").stat().st_mode & 0o777 == (tmp_path / "plain.bin").stat().st_mode & 0o777


def test_jsonl_records_read_back_in_order_one_per_line(tmp_path):
    records = [{"epoch": 0, "test_accuracy": 98.5}, {"epoch": 1, "test_accuracy": 99.25, "note": "a\nb"}]
    write_jsonl(tmp_path / "metrics.jsonl", records)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2  # a newline inside a value stays escaped
    assert read_jsonl(tmp_path / "metrics.jsonl") == records
    (tmp_path / "metrics.jsonl").write_text((tmp_path / "metrics.jsonl").read_text() + "\n")  # a trailing blank line
    assert read_jsonl(tmp_path / "metrics.jsonl") == records
    write_jsonl(tmp_path / "empty.jsonl", [])
    assert read_jsonl(tmp_path / "empty.jsonl") == []


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    atomic_write_bytes(tmp_path / "last.pt", b"previous")

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(tmp_path / "last.pt", b"new" * 1000)
    assert (tmp_path / "last.pt").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("name", ["a" * 245 + ".onnx", "é" * 125 + ".png"])  # 251 and 254 bytes
def test_a_name_as_long_as_the_file_system_takes_is_written(tmp_path, name):
    """The temporary file's name (the target's, with 14 more characters) was too long: "File name too long" for a
    name the file system takes (a review)."""
    atomic_write_bytes(tmp_path / name, b"data")
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_bytes() == b"data"


def test_errors_name_the_file_asked_for_not_the_temporary(tmp_path):
    (tmp_path / "digits.png").mkdir()  # a folder where the file should go
    with pytest.raises(IsADirectoryError) as error:
        atomic_write_bytes(tmp_path / "digits.png", b"png")
    assert error.value.filename == str(tmp_path / "digits.png") and error.value.filename2 is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.png"]


def test_a_read_only_destination_is_refused_before_any_work(small_filesystem):
    """lr-find ran its whole range test before a read-only --out failed (a review): check_destination is called
    before the work, and now asks whether the place can be written."""
    from mnist_ops.fileio import check_destination

    mount = small_filesystem(64)
    (mount / "runs").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    for path, directory in ((mount / "runs" / "lr-find", True), (mount / "model.onnx", False), (mount, True)):
        with pytest.raises(UserError, match=r"is not writable \(read-only, or its permissions\), so .* cannot be "
                                            "written; choose another path"):
            check_destination(path, directory=directory)
    check_destination(mount.parent / "elsewhere", directory=True)  # a writable place is not refused


def test_a_full_disk_keeps_the_previous_file_intact(small_filesystem):
    tiny_filesystem = small_filesystem(256)
    atomic_write_bytes(tiny_filesystem / "last.pt", b"a" * 100_000)
    with pytest.raises(OSError) as error:
        atomic_write_bytes(tiny_filesystem / "last.pt", b"b" * 200_000)  # old + new do not fit in 256 KB
    assert error.value.errno == 28  # ENOSPC
    assert error.value.filename == str(tiny_filesystem / "last.pt")  # the disk names no file: the error does
    assert (tiny_filesystem / "last.pt").read_bytes() == b"a" * 100_000
    assert [p.name for p in tiny_filesystem.iterdir()] == ["last.pt"]


WRITER = textwrap.dedent("""
    import sys
    from mnist_ops.fileio import atomic_write_bytes
    target, size = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    while True:
        for byte in b"AB":
            atomic_write_bytes(target, bytes([byte]) * size)
""")


def test_sigkill_during_writes_never_leaves_a_half_written_file(tmp_path):
    """Kill a process that does nothing but rewrite a 4 MB file, at 12 moments: the file is always
    one whole version, and the temporaries a kill leaves behind are cleared."""
    target, size = tmp_path / "last.pt", 4_000_000
    for kill in range(12):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(size)], stdout=subprocess.PIPE)
        assert writer.stdout.readline() == b"ready\n"
        time.sleep(0.05 + 0.037 * kill)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        if target.exists():
            content = target.read_bytes()
            assert content in (b"A" * size, b"B" * size), f"kill {kill}: a mixed or short file"
        remove_stale_temporaries(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] in (["last.pt"], [])
    assert target.exists()


def test_a_second_process_cannot_take_a_locked_run_directory(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mnist_ops.fileio import DirectoryLock
        lock = DirectoryLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(UserError, match=f"is in use by mnist-ops process {holder.pid}"):
            DirectoryLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    with DirectoryLock(tmp_path):  # the kernel released the killed holder's lock
        pass


def test_a_device_or_a_pipe_is_never_replaced(tmp_path):
    """As root, renaming a temp file over /dev/null turned it into a regular file of mode 0644."""
    from mnist_ops.fileio import check_destination

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for write in (lambda: atomic_write_bytes(pipe, b"x"), lambda: check_destination(pipe),
                  lambda: check_destination("/dev/null")):
        with pytest.raises(UserError, match="exists and is not a regular file"):
            write()
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
