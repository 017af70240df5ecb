"""The one-line message a long compile prints to stderr.

A program whose kernels are not in memory may have to compile them (about 0.1-0.5 s each). When
the first of them is actually compiled, not loaded from the disk cache, and at least
``MIN_KERNELS`` are left to prepare, one line says so. ``FUSEGRAD_QUIET=1`` silences it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

MIN_KERNELS = 4  # fewer compile in about a second: no message


def quiet() -> bool:
    """Whether ``FUSEGRAD_QUIET`` asks for no messages."""
    return os.environ.get("FUSEGRAD_QUIET", "").strip() not in ("", "0")


class CompileProgress:
    """Says once, on stderr, that a program's kernels are being compiled.

    Args:
        total: kernels of the program not yet in memory (each is loaded or compiled).
        folder: where compiled kernels are cached (None: the disk cache is off).
    """

    def __init__(self, total: int, folder: Path | None) -> None:
        self.left = total
        self.folder = folder
        self.said = False

    def starting(self, count: int, processes: int) -> str | None:
        """Say that ``count`` kernels are about to be compiled by ``processes`` processes (this one
        and compile workers, ``workers.compile_ahead``); the line printed, if any."""
        if self.said or count < MIN_KERNELS or quiet():
            return None
        self.said = True
        by = f" in {processes} processes" if processes > 1 else ""
        line = f"fusegrad: compiling {count} kernels{by}... (first run only; {self._where()})"
        print(line, file=sys.stderr, flush=True)
        return line

    def _where(self) -> str:
        return f"cached at {self.folder}" if self.folder is not None else "the disk cache is off"

    def prepared(self, compiled: bool) -> str | None:
        """Record one kernel prepared (``compiled``: not loaded); the line printed, if any."""
        left, self.left = self.left, self.left - 1
        if self.said or not compiled or left < MIN_KERNELS or quiet():
            return None
        self.said = True
        line = f"fusegrad: compiling up to {left} kernels... (first run only; {self._where()})"
        print(line, file=sys.stderr, flush=True)
        return line
