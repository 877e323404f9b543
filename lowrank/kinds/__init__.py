"""Layer kinds x factorisation schemes: one object per (layer type, scheme).

Each :class:`LayerScheme` owns everything that depends on the layer's type and the scheme:
the weight as a matrix and back, what one kept singular value costs (MACs from the layer's
recorded call shapes; parameters are always rows + cols of the matrix), and the two-layer
module that replaces the dense one. Nothing else in lowrank branches on layer types or
scheme names, so a new kind (Conv1d, say) or a new scheme is one new file in this package
that calls :func:`register` (every module here is imported, in name order).
"""
from ..util.plugins import import_submodules
from .base import (DEFAULT_SCHEME, LayerScheme, check_scheme, pad_mode, register, scheme_names, schemes, schemes_for,
                   split_factors, supported)

import_submodules(__name__, __path__)  # each module registers its schemes
from .conv2d import FactorizedConv2d  # noqa: E402
from .linear import FactorizedLinear  # noqa: E402

SCHEMES = scheme_names()

__all__ = ["DEFAULT_SCHEME", "FactorizedConv2d", "FactorizedLinear", "LayerScheme", "SCHEMES", "check_scheme", "pad_mode", "register",
           "scheme_names", "schemes", "schemes_for", "split_factors", "supported"]
