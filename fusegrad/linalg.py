"""``torch.linalg`` counterparts that fusegrad composes from its primitives."""
from .tracer.functions_ext import vector_norm

__all__ = ["vector_norm"]
