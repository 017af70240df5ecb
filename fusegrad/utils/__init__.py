"""``fusegrad.utils``: as ``torch.utils``, the data loading utilities (``fusegrad.utils.data``)."""
from . import data

__all__ = ["data"]
