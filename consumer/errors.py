"""Errors that are the user's to fix, shown by both CLIs as one line with exit status 2."""


class UserError(Exception):
    """A mistake by the person running a command (bad argument, missing file, unreachable broker)."""
