"""Bounded in-memory caches: a mapping that forgets its least recently used entries.

A base module (it imports nothing of fusegrad), so every layer may use it. Each cache's default
size is documented where it is made; ``FUSEGRAD_<NAME>_CACHE_SIZE`` environment variables
override them at import, and :meth:`LRUCache.resize` at run time. Also the readers of
``FUSEGRAD_*`` environment switches and sizes that several layers share.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def switch_from_env(variable: str) -> bool:
    """Whether environment variable ``variable`` leaves a switch on: everything but ``0``,
    ``false``, ``no`` and ``off`` (any case) does, unset included."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


def size_from_env(variable: str, default: int) -> int:
    """The positive integer in environment variable ``variable``, or ``default`` when unset.

    Raises:
        ValueError: the variable is set to something other than a positive integer.
    """
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"{variable}={text!r}: expected a positive number of entries")
    return size


class LRUCache(Generic[K, V]):
    """A mapping of at most ``capacity`` entries: adding one past it drops the entry used least
    recently (``get`` and ``__setitem__`` count as uses; ``in`` does not).

    Attributes:
        capacity: the most entries held.
        evictions: how many entries were dropped to keep within ``capacity``.
    """

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.capacity = 0
        self.evictions = 0
        self.resize(capacity)

    def resize(self, capacity: int) -> None:
        """Hold at most ``capacity`` (>= 1) entries from now on, dropping the oldest now."""
        if capacity < 1:
            raise ValueError(f"an LRU cache holds at least one entry, got capacity {capacity}")
        self.capacity = capacity
        self._evict()

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` (now the most recently used), or ``default``."""
        try:
            # taken out and put back last: one comparison of ``key`` with the stored one (a
            # program cache's keys are graphs of thousands of items), where a lookup followed
            # by ``move_to_end`` compares them twice
            value = self._entries.pop(key)
        except KeyError:
            return default
        self._entries[key] = value
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        self._evict()

    def __getitem__(self, key: K) -> V:
        value = self._entries[key]
        self._entries.move_to_end(key)
        return value

    def __delitem__(self, key: K) -> None:
        del self._entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self) -> None:
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1
