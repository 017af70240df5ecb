"""Target-neutral lowering: a fused Kernel becomes a loop nest (``loopnest.py``) that each
backend's renderer prints in its own language."""
from .loopnest import LoopNest
from .lower import LoweringError, kernel_work, load_base, lower

__all__ = ["LoopNest", "LoweringError", "kernel_work", "load_base", "lower"]
