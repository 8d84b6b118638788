"""The error types the command line turns into one line on stderr.

Library code raises `UserError` with a message that names the problem and the fix (exit code
2). `TrainingDiverged` means the loss stopped being finite (exit code 3): the user's recipe, not
their input, needs changing.
"""


class UserError(Exception):
    """A mistake the user can fix: bad input, missing data, unknown names."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite; the run stopped with last.pt at its last finite state."""

    exit_code = 3
