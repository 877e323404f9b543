"""lowrank: compress trained PyTorch networks by low-rank factorisation under hard budgets."""
from . import solvers_by_location  # noqa: F401  (first: installs lowrank.solvers, our solvers found by location)
from .solvers import InfeasibleBudgetError

from . import kinds, resources
from .budget import Budget
from .compress import CompressionResult, SeveredModelWarning, UnseenPathWarning, compress
from .factorise.masked import MaskedModel
from .finetuning import evaluate, finetune
from .kinds import DEFAULT_SCHEME, SCHEMES, FactorizedConv2d, FactorizedLinear
from .planning.plan import Plan
from .planning.rebuild import rebuild
from .planning.table import LayerTable
from .recalibrate import recalibrate_batchnorm
from .timing import LatencyTarget, compare_speed
from .version import __version__

__all__ = [
    "Budget", "CompressionResult", "DEFAULT_SCHEME", "FactorizedConv2d", "FactorizedLinear", "InfeasibleBudgetError",
    "LatencyTarget", "LayerTable", "MaskedModel", "Plan", "SCHEMES", "SeveredModelWarning", "UnseenPathWarning", "compare_speed", "compress",
    "evaluate", "finetune", "kinds", "rebuild", "recalibrate_batchnorm", "resources",
]
