"""fusegrad: PyTorch-style tensors traced into an IR, optimized, fused and compiled with Numba."""
from . import errors
from .errors import (CaptureError, CheckpointError, CodegenError, DTypeError, FusegradError,
                     ShapeError)
from .serialization import dumps, load, loads, save
from .tracer import Tensor
from .tracer.creation import (arange, as_tensor, empty, empty_like, eye, from_numpy, full,
                              full_like, linspace, ones, ones_like, rand, rand_like, randint,
                              randn, randn_like, randperm, tensor, zeros, zeros_like)
from . import cuda
from .tracer.device import device
from .tracer.dtype import (bool_, dtype, float32, float64, get_default_dtype, int32, int64,
                           set_default_dtype)
from .tracer.functions import (abs, add, allclose, amax, amin, argmax, argmin, bmm, broadcast_to,
                               cat, chunk, clamp, clip, cos, div, eq, exp, expand, flatten,
                               gather, ge, gt, index_select, le, log, log_softmax, logical_and,
                               logical_not, logical_or, logsumexp, lt, matmul, max, maximum,
                               mean, min, minimum, mm, mul, narrow, ne, neg, one_hot, permute,
                               pow, reciprocal, relu, reshape, rsqrt, sigmoid, sign, sin, softmax,
                               split, sqrt, square, squeeze, stack, std, sub, sum, take_along_dim,
                               tanh, transpose, unbind, unsqueeze, var, where)
from .tracer.functions import clone, detach
from .tracer.functions_ext import (addmm, addmv, all, any, argsort, argwhere, baddbmm, ceil,
                                   cumprod, cumsum, dot, einsum, erf, expm1, flip, fliplr,
                                   flipud, floor, floor_divide, fmod, frac, ger, isfinite, isinf,
                                   isnan, isneginf, isposinf, log1p, masked_fill, masked_select,
                                   msort, nan_to_num, nonzero, norm, outer, remainder,
                                   repeat_interleave, roll, round, sort, topk, tril, triu, trunc,
                                   unique)
from .tracer.primitives import FUNCTIONS as _PRIMITIVES
from .tracer.compile import CompiledFunction, compile
from .tracer.explain import explain
from .tracer.grad_mode import (enable_grad, inference_mode, is_grad_enabled,
                               is_inference_mode_enabled, no_grad, set_grad_enabled)
from .tracer.realize import realize as _realize_one
from .tracer.realize import set_backend
from .tracer.rng import initial_seed, manual_seed
from .tracer.tensor import Size

bool = bool_  # noqa: A001 - fusegrad.bool like torch.bool
float = float32  # noqa: A001
double = float64
long = int64
int = int32  # noqa: A001
__version__ = "0.1.0"


def realize(*tensors: Tensor) -> None:
    """Compute ``tensors`` (and everything else pending) together, in one compiled program."""
    _realize_one(*tensors)


def is_tensor(obj: object) -> "bool_":
    return isinstance(obj, Tensor)


def numel(t: Tensor) -> "int":
    return t.numel()


FloatTensor = Tensor

# the op table's user-facing primitives (fusegrad.exp, fusegrad.erf, ...), from their rows
globals().update(_PRIMITIVES)


# As ``import torch`` makes torch.nn and torch.optim available, so does ``import fusegrad``;
# ``fusegrad.nn``/``fusegrad.optim`` are the same modules as ``nnlib``/``optimlib``, so that
# ``import fusegrad as torch`` and ``import fusegrad.nn.functional as F`` port code unchanged.
import sys as _sys  # noqa: E402

from . import autograd, distributed, linalg, nnlib, optimlib, utils  # noqa: E402
from .tracer.rng import Generator  # noqa: E402

nn = nnlib
optim = optimlib
for _alias, _module in (("nn", nnlib), ("nn.functional", nnlib.functional),
                        ("nn.init", nnlib.init), ("nn.utils", nnlib.utils),
                        ("nn.parallel", nnlib.parallel),
                        ("optim", optimlib), ("optim.lr_scheduler", optimlib.lr_scheduler)):
    _sys.modules[f"{__name__}.{_alias}"] = _module
del _alias, _module
