"""The one error type for user mistakes.

Library code raises `UserError` with a message that names the problem and the fix;
the command line prints it as one line and exits with code 2.
"""


class UserError(Exception):
    """A mistake the user can fix: bad input, missing data, unknown names."""
