"""Errors that main.py reports as one clear message and a non-zero exit, without a traceback."""


class UserError(Exception):
    """Bad input from the user (flags, files, data): the message names the problem and the fix."""
