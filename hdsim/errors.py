"""The one error type that user-facing commands turn into a one-line message."""

from __future__ import annotations


class HdsimError(ValueError):
    """Invalid input or configuration; the message names the input and the problem."""
