"""lowrank: compress trained PyTorch networks by low-rank factorisation under hard budgets."""
from solvers import InfeasibleBudgetError

from .budget import Budget
from .compress import CompressionResult, compress
from .decompose import SCHEMES, MaskedModel
from .factorized import FactorizedConv2d, FactorizedLinear
from .finetune import evaluate, finetune
from .layers import LayerTable
from .plan import Plan
from .surgery import rebuild

__all__ = [
    "Budget", "CompressionResult", "FactorizedConv2d", "FactorizedLinear", "InfeasibleBudgetError",
    "LayerTable", "MaskedModel", "Plan", "SCHEMES", "compress", "evaluate", "finetune", "rebuild",
]
__version__ = "0.1.0"
