"""The error types the command line turns into one line on stderr, and the check for optional
dependencies (extras).

Library code raises `UserError` with a message that names the problem and the fix (exit code
2). `TrainingDiverged` means the loss stopped being finite (exit code 3): the user's recipe, not
their input, needs changing. A user's value goes into a message through `show`, so that the
message stays one line whatever the value holds.
"""

import reprlib
from typing import Any


def show(value: Any) -> str:
    """A user's value inside a one-line message: its repr (newlines escaped), shortened."""
    return reprlib.repr(value)


class UserError(Exception):
    """A mistake the user can fix: bad input, missing data, unknown names."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (a pre-empted job, `kill`): it stops as Ctrl-C does, so files stay whole, and exits 143 (128 + 15)."""


def stop_on_sigterm(signum, frame) -> None:
    """The SIGTERM handler of the command line and of each worker process."""
    raise Terminated


def import_torch_whole() -> None:
    """Import torch with Ctrl-C and SIGTERM held until it is done, then delivered. torch's C extension imports numpy
    and swallows what that raises: an interrupt in its first second or so was lost, the run trained on, and numpy,
    half set up, failed later ("Failed to initialize NumPy" in the plots; a review, 2026-11-28)."""
    import signal
    import sys

    if "torch" in sys.modules:
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        import torch  # noqa: F401
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)  # one that came meanwhile is raised here


def interrupted_code(error: KeyboardInterrupt) -> int:
    return 143 if isinstance(error, Terminated) else 130  # 128 + the signal's number, as a shell reports it


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite; the run stopped with last.pt at its last finite state.

    `what` says what happened and when (a study report lists it), the message adds what to do."""

    exit_code = 3

    def __init__(self, what: str, advice: str = ""):  # advice optional: pickling rebuilds it from the message
        super().__init__(f"{what}: {advice}" if advice else what)
        self.what = what


def install_hint(extra: str) -> str:
    """The pip command that installs an extra; from a checkout, with the tested versions (constraints.txt keeps the
    CPU build of torch that is pinned there)."""
    return f"pip install 'mnist-ops[{extra}]' (from a checkout: pip install -c constraints.txt -e '.[{extra}]')"


def require_extra(extra: str, *modules: str) -> None:
    """Raise a UserError naming the pip install that fixes it when an optional dependency is missing."""
    import importlib.util

    for module in modules:
        try:
            missing = importlib.util.find_spec(module) is None
        except (ImportError, ValueError):  # a parent package is missing, or the module is blocked in sys.modules
            missing = True
        if missing:
            raise UserError(f"this command needs the {module} package: {install_hint(extra)}")


def did_you_mean(name: object, choices, aliases: dict[str, str] | None = None) -> str:
    """' (did you mean 'x'?)' naming the closest known names (or an alias's name), else ''."""
    import difflib

    choices = [str(choice) for choice in choices]
    close = [aliases[str(name)]] if aliases and aliases.get(str(name)) in choices else \
        difflib.get_close_matches(str(name), choices, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(choice) for choice in close)}?)" if close else ""
