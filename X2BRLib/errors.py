"""Errors X2BR raises for bad input: one clear message naming the problem and the file."""
from __future__ import annotations


class X2BRError(Exception):
    """Base class of X2BR's own errors; the CLI prints these without a traceback."""


class InputError(X2BRError, ValueError):
    """A file or argument given by the user cannot be used.

    path: the offending file (or None); the message says what is wrong.
    """

    def __init__(self, message: str, path=None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class WeightsError(X2BRError):
    """Model weights are missing, corrupt or do not match their model card."""
