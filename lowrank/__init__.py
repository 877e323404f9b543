"""lowrank: compress trained PyTorch networks by low-rank factorisation under hard budgets."""
from solvers import InfeasibleBudgetError

from . import kinds, resources
from .budget import Budget
from .compress import CompressionResult, SeveredModelWarning, compress
from .kinds import SCHEMES, FactorizedConv2d, FactorizedLinear
from .latency import LatencyTarget, compare_speed
from .model.finetune import evaluate, finetune
from .model.masked import MaskedModel
from .model.plan import Plan
from .model.surgery import rebuild
from .model.table import LayerTable
from . import _compat  # noqa: E402,F401  (older module paths such as lowrank.layers keep working)

__all__ = [
    "Budget", "CompressionResult", "SeveredModelWarning", "FactorizedConv2d", "FactorizedLinear", "InfeasibleBudgetError",
    "LatencyTarget", "LayerTable", "MaskedModel", "Plan", "SCHEMES", "compare_speed", "compress", "evaluate", "finetune", "kinds", "rebuild", "resources",
]
__version__ = "0.1.0"
