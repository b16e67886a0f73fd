"""The one exception type that the command line turns into a one-line message."""


class CellcascadeError(Exception):
    """Bad input or a bad request: the message is written for the user, on one line."""
