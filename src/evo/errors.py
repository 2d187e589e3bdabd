"""The base of evo's own errors: what the CLI reports as a message, not a traceback."""


class EvoError(Exception):
    """A failure with a message meant for the user (what went wrong, where, what to do)."""
