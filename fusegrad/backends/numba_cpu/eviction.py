"""The disk cache's size bound: least recently used entries go past ``FUSEGRAD_CACHE_MAX_MB``.

The cache holds entries in the per-toolchain folders ``<cache_dir()>/fusegrad*/``. An entry is a
kernel (its module ``k_<stem>.py`` and Numba's files ``__pycache__/k_<stem>.*``) or a program
(``p_<digest>.json``); any other file there (a temporary left by a killed writer, a file of
another numba version) is an entry of its own. An entry's last use is the newest modification
time among its files: writing an entry sets it, and loading one touches its main file (access
times are not used: ``noatime`` mounts never update them).

Each process keeps an estimate of the cache's size: a scan at its first write, plus the bytes it
writes. When the estimate passes the cap, the folders are scanned again and the least recently
used entries are deleted until the cache holds at most ``KEEP`` of the cap, so that the next
writes do not evict again at once. Other processes' writes are counted at their own checks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_MB = 512.0
KEEP = 0.9   # after an eviction, the fraction of the cap the cache holds at most

_ESTIMATE: dict[Path, int] = {}   # cache root -> bytes, as this process last counted them


def max_bytes() -> int:
    """The cap in bytes: ``$FUSEGRAD_CACHE_MAX_MB`` megabytes (10**6 bytes), default 512.

    Raises:
        ValueError: the variable is not a positive number.
    """
    text = os.environ.get("FUSEGRAD_CACHE_MAX_MB", "").strip()
    if not text:
        return int(DEFAULT_MAX_MB * 1e6)
    try:
        mb = float(text)
    except ValueError:
        mb = float("nan")
    if not mb > 0 or mb == float("inf"):
        raise ValueError(f"FUSEGRAD_CACHE_MAX_MB={text!r}: expected a positive number of megabytes")
    return int(mb * 1e6)


@dataclass
class Entry:
    """One cache entry: its files, their total size and when it was last used."""

    kind: str                       # "kernel", "program" or "other"
    files: list[Path] = field(default_factory=list)
    size: int = 0
    last_used: float = 0.0

    def add(self, path: Path, st: os.stat_result) -> None:
        self.files.append(path)
        self.size += st.st_size
        self.last_used = max(self.last_used, st.st_mtime)


def toolchain_folders(root: Path) -> list[Path]:
    """The folders fusegrad made under the cache root (one per toolchain and machine)."""
    try:
        return sorted(d for d in root.glob("fusegrad*") if d.is_dir())
    except OSError:
        return []


def scan(root: Path) -> list[Entry]:
    """Every entry under ``root``'s toolchain folders (files that vanish meanwhile are skipped)."""
    entries: dict[tuple[Path, str], Entry] = {}
    for folder in toolchain_folders(root):
        for dirpath, _, names in os.walk(folder):
            base = Path(dirpath)
            for name in names:
                path = base / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                key, kind = _entry_of(folder, base, name)
                entries.setdefault(key, Entry(kind)).add(path, st)
    return list(entries.values())


def _entry_of(folder: Path, base: Path, name: str) -> tuple[tuple[Path, str], str]:
    if base == folder and name.startswith("p_") and name.endswith(".json"):
        return (folder, name), "program"
    if name.startswith("k_") and (base == folder / "__pycache__"
                                  or (base == folder and name.endswith(".py"))):
        return (folder, name.split(".", 1)[0]), "kernel"
    return (base, name), "other"


def touch(path: Path) -> None:
    """Record that the entry whose main file is ``path`` was just used (best effort: a
    read-only cache keeps its times)."""
    try:
        os.utime(path)
    except OSError:
        pass


def note_written(root: Path, nbytes: int) -> None:
    """Count ``nbytes`` just written under ``root``; evict if the cache is now over its cap."""
    if root not in _ESTIMATE:
        _ESTIMATE[root] = sum(e.size for e in scan(root))
    else:
        _ESTIMATE[root] += nbytes
    if _ESTIMATE[root] > max_bytes():
        evict(root)


def evict(root: Path, limit: int | None = None) -> list[Entry]:
    """Delete least recently used entries until the cache under ``root`` is within ``KEEP`` of
    ``limit`` (default ``max_bytes()``) if it is over ``limit``; returns the deleted entries."""
    limit = max_bytes() if limit is None else limit
    entries = scan(root)
    total = sum(e.size for e in entries)
    deleted: list[Entry] = []
    if total > limit:
        for entry in sorted(entries, key=lambda e: e.last_used):
            if total <= KEEP * limit:
                break
            for path in entry.files:
                try:
                    path.unlink()
                except OSError:  # gone already, or a read-only cache
                    pass
            total -= entry.size
            deleted.append(entry)
    _ESTIMATE[root] = total
    return deleted
