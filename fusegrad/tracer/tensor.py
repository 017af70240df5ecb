"""Tensor: a lazy handle on an IR node.

Operations build nodes; nothing runs until a value is needed (``item``, ``numpy``, ``print``,
``realize``, ``optimizer.step``). In-place operations rebind the handle to a new node, so the
Tensor keeps its identity while the IR stays immutable.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Any

import numpy as np

from ..ir import ops
from ..ir.buffer import Buffer
from ..ir.errors import CaptureError, FusegradError, with_location
from ..ir.node import KeyRef, Node
from . import capture
from . import dtype as dt
from .device import CUDA_USED, node_device, tensor_device
from .grad_mode import is_grad_enabled
from .provenance import user_location

_seq = itertools.count()


class WeakValues(dict):
    """``key -> object`` for live objects only: a dict of weak references whose callbacks drop
    their entry. Store with ``put``; ``get`` and ``values`` give the objects. A
    ``WeakValueDictionary`` runs three Python calls on every store, and tracing stores one entry
    per op."""

    def __init__(self) -> None:
        super().__init__()
        self._callback = self._gone  # one bound method, not one per entry

    def put(self, key: int, obj: Any) -> None:
        wr = KeyRef(obj, self._callback)
        wr.key = key
        dict.__setitem__(self, key, wr)

    def _gone(self, wr: KeyRef) -> None:
        if dict.get(self, wr.key) is wr:
            dict.__delitem__(self, wr.key)

    def get(self, key: int, default: Any = None) -> Any:
        wr = dict.get(self, key)
        obj = wr() if wr is not None else None
        return default if obj is None else obj

    def values(self) -> list:  # type: ignore[override]
        return [obj for wr in list(dict.values(self)) if (obj := wr()) is not None]


# Live tensors whose value is not in a buffer yet; a realization computes all of them together.
# Keyed by id: Tensor.__eq__ is elementwise, so tensors cannot sit in sets.
PENDING = WeakValues()
# id(root Buffer) -> the pending tensor whose realization writes into that storage: a tensor
# sharing the storage (``t.data``, ``detach()``, ``w.data = src``) reads that pending value.
WRITES = WeakValues()


def seq_mark() -> int:
    """A number between every tensor binding made so far (smaller ``seq``) and every later one."""
    return next(_seq)


class Tensor:
    """A multi-dimensional array whose operations are traced into an IR graph."""

    __slots__ = ("node", "requires_grad", "_grad", "_is_leaf", "seq", "_version",
                 "_retains_grad", "_data_of", "_graph_freed", "_home", "__weakref__")

    def __init__(self, data: Any = None, dtype: Any = None, requires_grad: bool = False,
                 device: Any = None):
        from .creation import as_array
        from .device import check_device, moved
        dev = check_device(device)
        buf = Buffer.from_array(as_array(data, dtype))
        if dev.type == "cuda":
            buf.data = moved(buf.data, dev)
        self._bind(ops.buffer(buf))
        self._grad: Tensor | None = None
        self._is_leaf = True
        self._version = 0
        self._retains_grad = False
        self._data_of = None
        self._graph_freed = False  # backward() without retain_graph went through its graph
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _from_node(cls, node: Node, requires_grad: bool = False) -> "Tensor":
        t = object.__new__(cls)
        t._bind(node, new=True)
        t.requires_grad = requires_grad
        t._grad = None
        t._is_leaf = not requires_grad
        t._version = 0
        t._retains_grad = False
        t._data_of = None
        t._graph_freed = False
        return t

    def _bind(self, node: Node, new: bool = False) -> None:
        """Hold ``node``; ``new``: this tensor was just made (it cannot be pending yet).

        The tensor leaves its storage: a pending ``node`` is realized into a new buffer."""
        if CUDA_USED[0] and node.op != "buffer":
            node_device(node)  # two devices meeting in one op raise here, at the user's line
        self.node = node
        self._home = None
        self.seq = next(_seq)
        if node.op != "buffer":
            PENDING.put(id(self), self)
        else:
            if not new:
                PENDING.pop(id(self), None)
            buf = node.attrs[0]
            current = buf.holder() if buf.holder is not None else None
            # a parameter or other state keeps its claim when a view or copy binds the same buffer
            if current is None or current is self or not capture.is_state(current):
                buf.holder = weakref.ref(self)

    def _write(self, node: Node) -> None:
        """Hold ``node`` as this tensor's new value, kept in the storage it has: a realized
        tensor's buffer becomes the target of an ``assign`` of ``node`` when it is realized, so
        parameters, optimizer state and module buffers keep one buffer for their lifetime, and
        every tensor sharing that storage sees the new value (as in torch)."""
        home = self._home
        if home is None and self.node.op == "buffer" and _writable(self, self.node.attrs[0]):
            home = self.node
        if node is home:  # its own value (``p.copy_(p)``)
            self._bind(node)
            return
        if home is not None and node.op == "buffer":
            node = ops.unary("detach", node)  # another buffer's value, copied at realization
        self._bind(node)
        self._home = home
        if home is not None:
            WRITES.put(id(home.attrs[0].root()), self)

    def _storage_node(self) -> Node | None:
        """The buffer leaf a realization writes this tensor's pending value into (None: a new
        buffer). A non-leaf that requires grad gets a new buffer: its buffer's ``source`` is
        an expression that may read the old value."""
        home = self._home
        if home is None or (self.requires_grad and not self._is_leaf):
            return None
        return home

    @property
    def grad(self) -> "Tensor | None":
        if capture._active:
            capture.note_grad_read(self)
        return self._grad

    @grad.setter
    def grad(self, value: "Tensor | None") -> None:
        if capture._active:  # the body sets the grad (None or a value)
            capture.active().grad_cleared[id(self)] = weakref.ref(self)
        self._grad = value

    def _assign(self, node: Node, requires_grad: bool = False) -> "Tensor":
        """Record an in-place update: the same Tensor now holds ``node``.

        ``requires_grad``: ``node`` depends on a tensor that requires grad, so this one now does
        too and stops being a leaf (``zeros(2).add_(w)`` is part of w's graph).
        """
        if node.shape != self.node.shape:
            raise FusegradError(with_location(
                f"in-place op: result shape {list(node.shape)} does not match tensor shape "
                f"{list(self.node.shape)}", user_location()))
        if self.requires_grad and self._is_leaf and is_grad_enabled():
            raise RuntimeError(with_location(
                "a leaf Variable that requires grad is being used in an in-place operation",
                user_location()))
        if capture.active() is not None:
            self._check_capturable_mutation()
        node = ops.cast(node, self.node.dtype)
        if (requires_grad or self.requires_grad) and is_grad_enabled() and \
                self.dtype.is_floating_point:
            # part of the graph now (or still: a non-leaf whose old value the graph may read, in
            # a buffer another tensor may share): a new buffer when realized, whose source is
            # ``node``
            self._bind(node)
            self.requires_grad, self._is_leaf = True, False
        else:
            self._write(node)
        self._version += 1
        # getattr: subclasses such as nnlib.Parameter set up their state without __init__
        data_of = getattr(self, "_data_of", None)
        base = data_of() if data_of is not None else None
        if base is not None and base.node.shape == self.node.shape:
            # ``t.data`` shares t's storage in torch: ``p.data.add_(u)`` updates ``p``
            base._write(_detached(self.node))
            base._version += 1
        return self

    def _check_capturable_mutation(self) -> None:
        """Inside a compiled function, only arguments and declared state may change in place."""
        data_of = getattr(self, "_data_of", None)
        target = data_of() if data_of is not None else None
        target = self if target is None else target
        trace = capture.active()
        if target.node.op != "buffer" or capture.is_state(target):
            return
        root = target.node.attrs[0].root()
        if trace.existed_before(root) and id(root) not in trace.arg_buffers:
            raise CaptureError(with_location(
                f"in-place update of a tensor {target.node.type_str} that is neither an "
                "argument, a parameter, a module buffer nor optimizer state: the compiled "
                "program could not update it on later calls; pass it as an argument",
                user_location()))

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self) -> "Size":
        return Size(self.node.shape)

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return Size(self.node.shape)
        return self.node.shape[_norm_dim(dim, self.ndim)]

    @property
    def dtype(self) -> dt.dtype:
        return dt.get(self.node.dtype)

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    def dim(self) -> int:
        return len(self.node.shape)

    def numel(self) -> int:
        return self.node.size

    def nelement(self) -> int:
        return self.node.size

    def element_size(self) -> int:
        return self.dtype.itemsize

    @property
    def is_leaf(self) -> bool:
        return self._is_leaf

    @property
    def device(self):
        """Where the value lives (a pending value: where the buffers it reads live)."""
        return tensor_device(self.node)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def _refuse_on_gpu(self) -> None:
        dev = self.device
        if dev.type == "cuda":
            raise TypeError(f"can't convert {dev.type}:{dev.index or 0} device type tensor to "
                            "numpy. Use Tensor.cpu() to copy the tensor to host memory first.")

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def __len__(self) -> int:
        if not self.node.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.node.shape[0]

    # ------------------------------------------------------------------ autograd state
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if not self._is_leaf:
            if not requires_grad:
                raise RuntimeError("you can only change requires_grad flags of leaf variables")
            return self
        if requires_grad and not self.dtype.is_floating_point:
            raise RuntimeError(with_location(
                f"only Tensors of floating point dtype can require gradients, got {self.dtype}",
                user_location()))
        self.requires_grad = requires_grad
        return self

    def _leaf_node(self) -> Node:
        """The node of a leaf that requires grad: a buffer of its own, which backward() finds."""
        if self.node.op != "buffer":
            if capture.active() is not None:
                raise CaptureError(with_location(
                    "a leaf tensor that requires grad is used with gradients on before its value "
                    "is computed, inside a compiled function: a parameter updated earlier in the "
                    "function (split the function at the update), or a tensor created in it with "
                    "requires_grad=True (create it outside, e.g. as a parameter)",
                    user_location()))
            from .realize import realize
            realize(self)
        buf = self.node.attrs[0]
        owner = buf.owner() if buf.owner is not None else None
        if owner is not self:
            if owner is not None:
                buf = Buffer(buf.shape, buf.dtype, buf.data)
                self._bind(ops.buffer(buf))
            buf.owner = weakref.ref(self)
        return self.node

    def retain_grad(self) -> None:
        self._retains_grad = True

    @property
    def data(self) -> "Tensor":
        """The value, cut from autograd; in-place ops on it also update this tensor."""
        d = Tensor._from_node(_detached(self.node), False)
        d._data_of = weakref.ref(self)
        return d

    @data.setter
    def data(self, value: "Tensor") -> None:
        data_of = getattr(value, "_data_of", None)
        if data_of is not None and data_of() is self:
            return  # ``p.data -= u``: the in-place op on ``p.data`` updated ``p`` already
        self._bind(_detached(value.node))

    # ------------------------------------------------------------------ realization
    def realize(self) -> "Tensor":
        from .realize import realize
        realize(self)
        return self

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError(with_location(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                "instead.", user_location()))
        self._refuse_on_gpu()
        return self._value()

    def _value(self, what: str = "numpy()") -> np.ndarray:
        from .realize import check_capture, realize
        check_capture(self, what)
        if self.node.op != "buffer":
            realize(self)
        elif WRITES and pending_write(self) is not None:
            realize(*PENDING.values())  # another tensor on this storage was updated in place
        return self.node.attrs[0].numpy()

    def item(self) -> float | int | bool:
        if self.node.size != 1:
            raise ValueError(with_location(
                f"a Tensor with {self.node.size} elements cannot be converted to Scalar",
                user_location()))
        return self._value("item()").reshape(()).item()

    def tolist(self) -> Any:
        return self._value("tolist()").tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.is_floating_point:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self) -> bool:
        from .realize import check_capture
        check_capture(self, "bool()")
        if self.node.size != 1:
            raise RuntimeError(with_location(
                f"Boolean value of Tensor with {self.node.size} elements is ambiguous",
                user_location()))
        return bool(self.item())

    def __repr__(self) -> str:
        from .realize import capturing
        if capturing():
            return f"tensor(<traced {self.node.type_str}>)"
        arr = self._value()
        body = np.array2string(arr, separator=", ", prefix="tensor(", threshold=1000,
                               precision=4)
        extras = []
        if self.node.dtype not in ("float32", "int64", "bool"):
            extras.append(f"dtype={self.dtype!r}")
        if self.is_cuda:
            extras.append(f"device='{self.device}'")
        if self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({body}{', ' if extras else ''}{', '.join(extras)})"

    __str__ = __repr__

    def __hash__(self) -> int:
        return id(self)

    def __iter__(self):
        if not self.node.shape:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.node.shape[0]):
            yield self[i]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self._refuse_on_gpu()
        arr = self.detach()._value()
        return arr.astype(dtype) if dtype is not None else arr

    def __deepcopy__(self, memo: dict) -> "Tensor":
        from .realize import realize
        realize(self)
        buf = self.node.attrs[0]
        t = type(self).__new__(type(self))
        Tensor.__init__(t, buf.numpy().copy(), device=self.device)
        if self._is_leaf and self.requires_grad:
            t.requires_grad_(True)
        if capture.is_state(self):
            capture.mark_state(t)
        memo[id(self)] = t
        return t


class Size(tuple):
    """A tensor's shape (a tuple, like ``torch.Size``)."""

    def numel(self) -> int:
        n = 1
        for d in self:
            n *= d
        return n

    def __repr__(self) -> str:
        return f"fusegrad.Size([{', '.join(map(str, self))}])"


def _norm_dim(dim: int, ndim: int, op: str = "dim") -> int:
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(with_location(
            f"{op}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got "
            f"{dim})", user_location()))
    return dim % n


def _detached(node: Node) -> Node:
    """The same value, cut from autograd: a realized value gets a new Buffer on the same data."""
    if node.op == "buffer":
        buf = node.attrs[0]
        view = Buffer(buf.shape, buf.dtype, buf.data)
        view.alias_of = buf
        return ops.buffer(view)
    if node.op in ("const", "detach"):
        return node
    return ops.unary("detach", node)


def _writable(t: Tensor, buf: Buffer) -> bool:
    """Whether an in-place update of ``t`` may write into its buffer ``buf``: inside a
    ``fusegrad.compile`` trace, a buffer from before the trace (an argument's) or declared state,
    never another one made in it (a constant of the compiled program) nor a random key."""
    if buf.rng_count:
        return False
    trace = capture.active()
    return trace is None or trace.existed_before(buf) or capture.is_state(t)


def pending_write(t: Tensor) -> Tensor | None:
    """The other tensor whose pending in-place update will write into the storage of ``t`` (a
    realized tensor), if there is one: ``t``'s current value is that tensor's pending value."""
    root = t.node.attrs[0].root()
    writer = WRITES.get(id(root))
    if writer is None or writer is t or writer._home is None or writer.node.op == "buffer" or \
            writer._home.attrs[0].root() is not root or writer.node.shape != t.node.shape:
        return None
    return writer
