"""Files that are never half-written, and run directories that one process owns at a time.

`atomic_write_bytes` writes a temp file beside the target, fsyncs it, renames it over the target
and fsyncs the directory: after a crash, a kill or a power cut the target holds either the old
bytes or the new ones. The file gets the permissions of an ordinary new file (0666 minus the
umask), not the temp file's 0600. A failed write (a full disk: ENOSPC) removes its temp file and
raises, leaving the previous file intact. A SIGKILL can still leave a temp file behind; its name
starts with `.<target>.` and ends in `.tmp`, and `remove_stale_temporaries` clears them when a
run resumes.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from mnist_ops.errors import UserError, show

TEMP_SUFFIX = ".tmp"


def _refuse_special_file(path: Path) -> None:
    """A device (/dev/null) or a pipe where a file is to be written: the rename would replace it. A directory is
    left to os.replace, whose IsADirectoryError names it."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise UserError(f"{path} exists and is not a regular file (a device or a pipe); write to a file path instead")


def check_destination(path: str | os.PathLike, directory: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: a name that is not UTF-8 (the run's own
    text files name it), or one below a file. `directory`: the path is a directory to create or fill."""
    path = Path(path)
    try:
        os.fsdecode(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"output path {os.fsdecode(path)!r} is not valid UTF-8; choose a name in UTF-8") from None
    if directory and path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, and this command writes a directory there; choose another path")
    if not directory:
        _refuse_special_file(path)
    start = path if directory else path.parent
    for ancestor in (start, *start.parents):
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise UserError(f"{ancestor} is a file, not a directory, so {path} cannot be written; "
                                "choose another path")
            if not os.access(ancestor, os.W_OK | os.X_OK):  # read-only (a mount, permissions): before the work
                raise UserError(f"{ancestor} is not writable (read-only, or its permissions), so {path} cannot be "
                                "written; choose another path")
            break
    return path


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, in every thread)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)  # no /proc (not Linux): the classic read-and-restore
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_bytes(path: str | os.PathLike, content: bytes) -> None:
    """Write `content` to `path` all at once or not at all, durably, with the user's umask. An existing device
    (such as /dev/null) or pipe is refused: the rename would replace it, and as root /dev/null became a file."""
    path = Path(path)
    _refuse_special_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # at most 200 bytes of the name: with the dots, 8 random characters and .tmp, a name the file system takes
        # (255 bytes) whenever the target's is; a longer one failed as "File name too long" (a review)
        stem = os.fsencode(path.name)[:200].decode(errors="ignore")
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.", suffix=TEMP_SUFFIX)
    except OSError as error:
        raise _naming(error, path) from None
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(content)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, 0o666 & ~_umask())
        os.replace(temp_name, path)
    except BaseException as error:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(error, path) from None
        raise
    _fsync_directory(path.parent)


def _naming(error: OSError, path: Path) -> OSError:
    """The same error (same errno, so the same subclass) naming the file the user asked for: a full disk
    names no file, and the others name our temporary file. One without an errno is left as it is."""
    return error if error.errno is None else OSError(error.errno, error.strerror or str(error), str(path))


def atomic_write_json(path: str | os.PathLike, record) -> None:
    """`record` as indented JSON with a final newline, written as atomic_write_bytes writes."""
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """One JSON object per line (a run's metrics.jsonl), written atomically."""
    atomic_write_bytes(path, "".join(json.dumps(record) + "\n" for record in records).encode())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records `write_jsonl` wrote, in order (blank lines skipped). A line that is not a JSON object is a
    ValueError naming it (as is text that is not UTF-8: UnicodeDecodeError)."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise ValueError(f"line {number} is not a JSON object: {show(line)}")
        records.append(record)
    return records


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete temp files that a killed writer left in `directory`; returns what was removed."""
    removed = []
    for candidate in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


class DirectoryLock:
    """An exclusive lock on `directory/.lock` (or another file name there; flock), held while a process writes there.

    The kernel drops it when the process ends, however it ends, so a killed run never leaves a
    stale lock. A second process asking for it gets a UserError at once instead of waiting."""

    def __init__(self, directory: str | os.PathLike, what: str = "run directory", name: str = ".lock"):
        self.path = Path(directory) / name
        self.what = what
        self._handle = None

    def acquire(self, wait: bool = False) -> "DirectoryLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"{self.what} {self.path.parent} is in use by {owner}; wait for it to finish, "
                            "or use another directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"mnist-ops process {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the flock
            self._handle = None

    def __enter__(self) -> "DirectoryLock":
        return self if self._handle is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    except OSError as error:  # a directory, no permission
        raise UserError(f"cannot read config file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"config file {path} is not valid TOML: not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        if path.read_bytes().startswith(b"\xef\xbb\xbf"):  # Windows' "UTF-8 with BOM", which TOML does not allow
            raise UserError(f"config file {path} starts with a byte order mark (saved as \"UTF-8 with BOM\"), which "
                            "TOML does not allow; save it as plain UTF-8") from None
        raise UserError(f"config file {path} is not valid TOML: {error}") from None
    except RecursionError:
        raise UserError(f"config file {path} is not valid TOML: arrays or tables nested too deeply") from None
