"""Graph-to-graph optimisation passes and the pipeline that runs them."""
from .constfold import constant_folding
from .cse import common_subexpression_elimination
from .dce import dead_code_elimination
from .pipeline import PASSES, PassRecord, optimize
from .rewrite import rebuild, rewrite
from .simplify import algebraic_simplification

__all__ = [
    "PASSES",
    "PassRecord",
    "algebraic_simplification",
    "common_subexpression_elimination",
    "constant_folding",
    "dead_code_elimination",
    "optimize",
    "rebuild",
    "rewrite",
]
