"""Module: the base class of layers, with parameter/buffer/submodule registration."""
from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from ..errors import with_location
from ..tracer import state as tracer_state
from ..tracer.creation import tensor
from ..tracer.device import check_device
from ..tracer.functions import to_dtype
from ..tracer.grad_mode import no_grad
from ..tracer.provenance import register_module_call, user_location
from ..tracer.tensor import Tensor
from .parameter import Parameter


_ABSENT = object()  # no entry under a name (a registered None is an entry)


class Module:
    """Base class for all layers: ``forward`` holds the computation, calling the module runs it."""

    training: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        # the user's line that built this module: the provenance of its ops when a library
        # container, not the user's forward, calls it
        object.__setattr__(self, "_defined_at", user_location())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"Module [{type(self).__name__}] is missing the required "
                                  "\"forward\" function")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer_state.note_module(self)  # a compiled trace replays only while its modes are unchanged
        pre, post = self.__dict__.get("_forward_pre_hooks"), self.__dict__.get("_forward_hooks")
        if not pre and not post:
            return self.forward(*args, **kwargs)
        for hook, with_kwargs in list(pre.values()):
            if with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(post.values()):
            result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
            if result is not None:
                output = result
        return output

    # ------------------------------------------------------------------ hooks
    def register_forward_pre_hook(self, hook: Callable[..., Any], *, prepend: bool = False,
                                  with_kwargs: bool = False) -> RemovableHandle:
        """Call ``hook(module, args)`` before each forward (``hook(module, args, kwargs)`` with
        ``with_kwargs``); a non-None result replaces the arguments. Returns a handle whose
        ``remove()`` unregisters the hook."""
        return RemovableHandle.add(self._forward_pre_hooks, (hook, with_kwargs), prepend)

    def register_forward_hook(self, hook: Callable[..., Any], *, prepend: bool = False,
                              with_kwargs: bool = False) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after each forward (``hook(module, args, kwargs,
        output)`` with ``with_kwargs``); a non-None result replaces the output. Returns a
        handle whose ``remove()`` unregisters the hook."""
        return RemovableHandle.add(self._forward_hooks, (hook, with_kwargs), prepend)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._changed(params, name, value)
            self._drop(name)
            params[name] = value
        elif params is not None and name in params:
            if value is not None and not isinstance(value, Parameter):
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(fusegrad.nnlib.Parameter or None expected)")
            self._changed(params, name, value)
            params[name] = value
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._changed(self._modules, name, value)
            self._drop(name)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (Module or None expected)")
            self._changed(self._modules, name, value)
            self._modules[name] = value
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}'")
            self._changed(self._buffers, name, value)
            self._buffers[name] = value if value is None else tracer_state.mark_state(value)
        else:
            old = self.__dict__.get(name)
            if isinstance(old, Tensor) and old is not value:
                # a tensor kept as a plain attribute (a recurrent state): a trace reads the old one
                tracer_state.replaced(old, f"{type(self).__name__}.{name}")
            object.__setattr__(self, name, value)
            if name == "training":
                tracer_state.modes_changed()

    def _changed(self, store: dict, name: str, value: Any) -> None:
        """Before ``store[name] = value``: replacing or removing a registered parameter, buffer
        or submodule (or, on a module a compiled function has traced, adding one) makes compiled
        functions trace again, since a replay would keep using the objects it was traced with.
        Inside a trace, replacing one makes the traced function unreplayable."""
        old = store.get(name, _ABSENT)
        if old is value:
            return
        what = f"{type(self).__name__}.{name}"
        if old is not _ABSENT and old is not None:
            tracer_state.replaced(old, what)
        elif old is None and value is not _ABSENT:
            tracer_state.note_state_created()  # made lazily (if self.running is None: ...)
        if self.__dict__.get("_traced") and (old is _ABSENT or old is None or value is _ABSENT
                                             or value is None):
            tracer_state.structure_changed(what)  # added or removed

    def _drop(self, name: str) -> None:
        self.__dict__.pop(name, None)
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        self._non_persistent.discard(name)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                self._changed(store, name, _ABSENT)
                del store[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def _check_name(self, kind: str, name: Any, store: dict) -> None:
        """torch's rules for a new member's name (and "already exists" for other attributes)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError(f"{kind} name can't contain \".\"")
        if name == "":
            raise KeyError(f"{kind} name can't be empty string \"\"")
        if hasattr(self, name) and name not in store:
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._check_name("parameter", name, self.__dict__.get("_parameters", {}))
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (fusegrad.nnlib.Parameter or None required)")
        self._changed(self._parameters, name, param)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that is state but not a parameter (running statistics); ``persistent=False``
        keeps it out of the state dict."""
        self._check_name("buffer", name, self.__dict__.get("_buffers", {}))
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            "(fusegrad.Tensor or None required)")
        # declared state: a compiled step may update it in place (running statistics)
        self._changed(self._buffers, name, tensor)
        self._buffers[name] = tensor if tensor is None else tracer_state.mark_state(tensor)
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name("module", name, self.__dict__.get("_modules", {}))
        self._changed(self._modules, name, module)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        mod = self
        for part in target.split(".") if target else []:
            if not isinstance(mod._modules.get(part), Module):
                raise AttributeError(f"{mod._get_name()} has no attribute `{part}`")  # noqa: TRY004 - torch's
            mod = mod._modules[part]
        return mod

    def _get_member(self, target: str, store: str, kind: str) -> Tensor:
        module_path, _, name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        if name not in getattr(mod, store):
            raise AttributeError(f"{mod._get_name()} has no {kind} `{name}`")
        return getattr(mod, store)[name]

    def get_parameter(self, target: str) -> Parameter:
        return self._get_member(target, "_parameters", "parameter")

    def get_buffer(self, target: str) -> Tensor:
        return self._get_member(target, "_buffers", "buffer")

    # ------------------------------------------------------------------ iteration
    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, mod in self._modules.items():
            if mod is not None:
                yield from mod.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                             remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, mod in self._modules.items():
            if mod is not None and id(mod) not in seen:
                seen.add(id(mod))
                yield name, mod

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool,
                       remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for mod_prefix, mod in mods:
            for name, value in getattr(mod, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")  # noqa: TRY004 - torch's
        object.__setattr__(self, "training", mode)
        tracer_state.modes_changed()
        for m in self.children():
            m.train(mode)  # through each child's own train(), which subclasses may extend
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None  # also when already None: a compile trace sees the grads cleared
            elif p.grad is not None:
                p.grad.zero_()

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ devices and dtypes
    def _cast(self, dtype: Any) -> Module:
        with no_grad():
            for m in self.modules():
                for store in (m._parameters, m._buffers):
                    for t in store.values():
                        if t is not None and t.dtype.is_floating_point:
                            new = to_dtype(t, dtype)
                            tracer_state.share_storage(t, new)
                            if t.grad is not None:
                                tracer_state.share_storage(t.grad, to_dtype(t.grad, dtype))
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or ``to(tensor)``; parameters and
        buffers keep their identity (and their grads follow them to the device), and only
        floating-point ones change dtype."""
        from ..tracer.dtype import dtype as dtype_cls
        dtype = kwargs.get("dtype")
        target = None
        for a in args:
            if isinstance(a, dtype_cls):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, target = a.dtype, a.device
            else:
                target = check_device(a)
        if kwargs.get("device") is not None:
            target = check_device(kwargs["device"])
        if target is not None:
            self._move(target)
        if dtype is None:
            return self
        if not dtype.is_floating_point:
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired "
                            f"dtype={dtype}")
        return self._cast(dtype)

    def _move(self, target: Any) -> None:
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for t in store.values():
                    if t is not None:
                        tracer_state.move_storage(t, target)
                        if t.grad is not None:
                            tracer_state.move_storage(t.grad, target)

    def cpu(self) -> Module:
        self._move(check_device("cpu"))
        return self

    def cuda(self, device: Any = None) -> Module:
        self._move(check_device("cuda" if device is None else device))
        return self

    def float(self) -> Module:
        return self._cast("float32")

    def double(self) -> Module:
        return self._cast("float64")

    # ------------------------------------------------------------------ state dicts
    def state_dict(self, destination: dict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name (a module shared under two names
        appears under both, as in torch); values are detached unless ``keep_vars``."""
        out: OrderedDict[str, Tensor] = OrderedDict() if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b if keep_vars else b.detach()
        for name, mod in self._modules.items():
            if mod is not None:
                mod.state_dict(destination=out, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> IncompatibleKeys:
        """Copy values from ``state_dict`` into the parameters and buffers (which keep their
        identity and dtype).

        Shapes must match whatever ``strict`` says; with ``strict`` the keys must match too. The
        error lists every missing key, unexpected key and size mismatch, as torch's does. Values
        may be tensors or arrays.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        values: dict[str, Tensor] = {}
        for k, target in own.items():
            if k not in state_dict:
                continue
            value = state_dict[k]
            # arrays are copied: the model must not alias memory the caller may still write
            values[k] = value if isinstance(value, Tensor) else tensor(value)
            if tuple(values[k].shape) != tuple(target.shape):
                errors.append(f"size mismatch for {k}: copying a param with shape "
                              f"{values[k].shape} from checkpoint, the shape in current model "
                              f"is {target.shape}.")
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " +
                              ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " +
                              ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(with_location(
                f"Error(s) in loading state_dict for {self._get_name()}:\n\t" +
                "\n\t".join(errors), user_location()))
        with no_grad():
            for k, value in values.items():
                target = own[k]
                # copied into the tensor's own buffer, as torch's copy_: the model never shares
                # storage with the state dict, and compiled steps go on reading that buffer
                target.copy_(value.detach())
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def _get_name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        """One line (or several) of settings shown inside the module's repr."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(mod).replace("\n", "\n  ")
                       for name, mod in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) |
                      set(self._modules))


class RemovableHandle:
    """What ``register_*_hook`` returns: ``remove()`` (or leaving a ``with`` block) unregisters
    the hook."""

    _next_id = 0

    def __init__(self, hooks: OrderedDict) -> None:
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1
        self.hooks_dict_ref = weakref.ref(hooks)

    @classmethod
    def add(cls, hooks: OrderedDict, entry: Any, prepend: bool) -> RemovableHandle:
        handle = cls(hooks)
        hooks[handle.id] = entry
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def remove(self) -> None:
        hooks = self.hooks_dict_ref()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


register_module_call(Module.__call__.__code__)


class IncompatibleKeys(tuple):
    """(missing_keys, unexpected_keys), as ``load_state_dict`` returns them."""

    def __new__(cls, missing: list[str], unexpected: list[str]) -> Self:
        return super().__new__(cls, (missing, unexpected))

    @property
    def missing_keys(self) -> list[str]:
        return self[0]

    @property
    def unexpected_keys(self) -> list[str]:
        return self[1]

    def __repr__(self) -> str:
        if not self[0] and not self[1]:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self[0]}, unexpected_keys={self[1]})"
