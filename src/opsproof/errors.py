"""Errors that end a command with one clear line (no traceback)."""


class OpsproofError(Exception):
    """A failure the user can act on. `exit_code` 2 = bad input/usage, 1 = the check/operation failed."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(OpsproofError):
    exit_code = 2
