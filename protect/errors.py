"""Errors the services raise; views turn them into translated messages."""
from __future__ import annotations


class DomainError(Exception):
    """A rule refused the action; ``message`` is translatable and safe to show."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = message


class PermissionDenied(DomainError):
    pass


class NotFound(DomainError):
    pass
