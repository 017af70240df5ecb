"""View: how a chain of movement ops reads a contiguous buffer, as index arithmetic.

A view maps an index ``i`` of its shape to the flat offset ``offset + sum(i_d * strides_d)``.
A dim may carry a mask ``(start, step, count)`` (from ``pad``): the position is valid only when
``i_d = start + k*step`` with ``0 <= k < count``, and then contributes ``k * strides_d``; invalid
positions read zero. Operations return ``None`` when the result is not a single view; the fuser
then materialises the input of that movement op.
"""
from __future__ import annotations

from dataclasses import dataclass

Mask = tuple[int, int, int] | None


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc if d != 1 else 0)
        acc *= d
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    masks: tuple[Mask, ...] | None = None

    @staticmethod
    def contiguous(shape: tuple[int, ...]) -> "View":
        return View(tuple(shape), _contiguous_strides(tuple(shape)))

    @property
    def is_contiguous(self) -> bool:
        return self.offset == 0 and self.masks is None and \
            self.strides == _contiguous_strides(self.shape)

    def mask(self, d: int) -> Mask:
        return None if self.masks is None else self.masks[d]

    def _with(self, shape, strides, offset, masks) -> "View":
        masks = tuple(masks) if masks is not None and any(m is not None for m in masks) else None
        return View(tuple(shape), tuple(strides), offset, masks)

    def permute(self, perm: tuple[int, ...]) -> "View":
        masks = None if self.masks is None else [self.masks[p] for p in perm]
        return self._with([self.shape[p] for p in perm], [self.strides[p] for p in perm],
                          self.offset, masks)

    def expand(self, shape: tuple[int, ...]) -> "View":
        strides, masks = list(self.strides), list(self.masks or [None] * len(shape))
        for d, (old, new) in enumerate(zip(self.shape, shape)):
            if old == new:
                continue
            strides[d] = 0
            m = masks[d]
            if m is not None:  # a size-1 padded dim is either the value everywhere or zeros
                masks[d] = None if (m[0] == 0 and m[2] >= 1) else (0, 1, 0)
        return self._with(shape, strides, self.offset, masks)

    def slice(self, ranges: tuple[tuple[int, int, int], ...]) -> "View | None":
        shape, strides, offset = [], [], self.offset
        for d, (start, stop, step) in enumerate(ranges):
            if self.mask(d) is not None and (start, stop, step) != (0, self.shape[d], 1):
                return None
            offset += start * self.strides[d]
            shape.append(max(0, -(-(stop - start) // step)))
            strides.append(self.strides[d] * step)
        return self._with(shape, strides, offset, self.masks)

    def pad(self, shape: tuple[int, ...], placement: tuple[tuple[int, int], ...]) -> "View | None":
        masks = list(self.masks or [None] * len(shape))
        for d, ((start, step), old, new) in enumerate(zip(placement, self.shape, shape)):
            if (start, step) == (0, 1) and old == new:
                continue
            if masks[d] is not None:
                return None
            masks[d] = (start, step, old)
        return self._with(shape, self.strides, self.offset, masks)

    def reshape(self, shape: tuple[int, ...]) -> "View | None":
        shape = tuple(shape)
        if self.masks is not None:
            return None
        if 0 in shape:
            return View.contiguous(shape)
        old = [(d, s) for d, s in zip(self.shape, self.strides) if d != 1]
        new_strides = [0] * len(shape)
        new_idx = [i for i, d in enumerate(shape) if d != 1]
        oi = ni = 0
        while ni < len(new_idx) and oi < len(old):
            np_, op_ = shape[new_idx[ni]], old[oi][0]
            nj, oj = ni + 1, oi + 1
            while np_ != op_:
                if np_ < op_:
                    np_ *= shape[new_idx[nj]]
                    nj += 1
                else:
                    op_ *= old[oj][0]
                    oj += 1
            for k in range(oi, oj - 1):
                if old[k][1] != old[k + 1][0] * old[k + 1][1]:
                    return None
            new_strides[new_idx[nj - 1]] = old[oj - 1][1]
            for k in range(nj - 1, ni, -1):
                new_strides[new_idx[k - 1]] = new_strides[new_idx[k]] * shape[new_idx[k]]
            ni, oi = nj, oj
        return View(shape, tuple(new_strides), self.offset)
