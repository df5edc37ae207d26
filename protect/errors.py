"""Errors the services raise; views turn them into translated messages."""
from __future__ import annotations


class DomainError(Exception):
    """A rule refused the action; ``message`` is translatable and safe to show."""

    def __init__(self, message):
        # Kept lazy: translating here would ask for the locale, which may load the
        # signed-in account through a session that has just failed (a stale vault).
        super().__init__(message)
        self.message = message


class PermissionDenied(DomainError):
    pass


class NotFound(DomainError):
    pass
