"""Errors that a user can fix: the CLI prints them on one line and exits with code 2."""


class UserError(Exception):
    """Bad input (unknown preset, wrong --set value, missing dataset, bad checkpoint).

    The message is one line that says what is wrong and what to do about it.
    """
