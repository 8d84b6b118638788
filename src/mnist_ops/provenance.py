"""What produced a number: the code version, torch and the thread count, for every results file and run.

Results files (`bench --json`, the benchmarks' --json) carry this record and are never
overwritten: a doc may cite one, and a rerun would silently change what it cites.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ENVIRONMENT_FILE = "environment.json"  # in every run directory: run_provenance() and the device, per (re)start


def _git(*args: str) -> str | None:
    """A git command's output in the package's checkout, or None outside one (an installed wheel)."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def code_version() -> str:
    """`git describe --always --dirty --tags` of the checkout ('-dirty': uncommitted changes were in the
    code that ran), else the package version."""
    from mnist_ops import __version__

    described = _git("describe", "--always", "--dirty", "--tags")
    return f"{__version__} ({described})" if described else __version__


def run_provenance() -> dict:
    """Code version and commit, torch version and intra-op threads, Python: store it beside any result."""
    import torch

    return {"code_version": code_version(), "commit": _git("rev-parse", "HEAD") or "unknown",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}


def refuse_existing(path: str | os.PathLike) -> Path:
    """A results file is written once: refuse a path that exists, before any measuring starts."""
    from mnist_ops.errors import UserError
    from mnist_ops.fileio import check_destination

    path = check_destination(path)
    if path.exists():
        raise UserError(f"{path} exists and results files are never overwritten (a doc may cite it); "
                        "pass a new file name")
    return path


def write_results(path: str | os.PathLike, results: dict) -> Path:
    """Write a results JSON file with its provenance (unless it has one); refuses an existing file."""
    from mnist_ops.fileio import atomic_write_json

    path = refuse_existing(path)
    record = {**results, "provenance": results.get("provenance") or run_provenance()}
    atomic_write_json(path, record)
    return path
