"""Data types of the IR and PyTorch's type-promotion rules."""
from __future__ import annotations

import numpy as np

DTYPES: tuple[str, ...] = ("bool", "int32", "int64", "float32", "float64")
SHORT = {"bool": "b8", "int32": "i32", "int64": "i64", "float32": "f32", "float64": "f64"}
_CATEGORY = {"bool": 0, "int32": 1, "int64": 1, "float32": 2, "float64": 2}
_RANK = {"bool": 0, "int32": 1, "int64": 2, "float32": 3, "float64": 4}


def to_numpy(dtype: str) -> np.dtype:
    return np.dtype(dtype)


def from_numpy(dtype: np.dtype | type) -> str:
    name = np.dtype(dtype).name
    if name not in _RANK:
        raise TypeError(f"unsupported dtype {name}; fusegrad supports {', '.join(DTYPES)}")
    return name


def is_float(dtype: str) -> bool:
    return _CATEGORY[dtype] == 2


def is_int(dtype: str) -> bool:
    return _CATEGORY[dtype] == 1


def promote(a: str, b: str) -> str:
    """Result dtype of a binary op on two tensors (torch.result_type for tensor operands)."""
    if _CATEGORY[a] != _CATEGORY[b]:
        return a if _CATEGORY[a] > _CATEGORY[b] else b
    return a if _RANK[a] >= _RANK[b] else b


def scalar_category(value: object) -> int:
    if isinstance(value, (bool, np.bool_)):
        return 0
    if isinstance(value, (int, np.integer)):
        return 1
    return 2


def promote_scalar(tensor_dtype: str, value: object, default_float: str = "float32") -> str:
    """Result dtype of tensor (op) Python scalar: the scalar only lifts the category."""
    cat = scalar_category(value)
    if cat <= _CATEGORY[tensor_dtype]:
        return tensor_dtype
    return "int64" if cat == 1 else default_float
