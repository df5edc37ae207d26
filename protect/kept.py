"""Things made once and kept in this process for reuse, least recently used out first."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache


class Kept:
    """A bounded, thread-safe (gthread workers) map: by count, or by ``size`` of each value.
    The caller's key says what a value was made of, so a stale one is simply never asked for."""

    def __init__(self, limit: int, size: Callable[[Any], int] | None = None):
        self._items: LRUCache = LRUCache(limit, getsizeof=size)
        self._lock = threading.Lock()

    def get(self, key) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
