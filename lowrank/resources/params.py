"""Parameters: every parameter of the model, counted once (``numel``)."""
from __future__ import annotations

from ..solvers import PARAMS
from .base import Resource, register


class Params(Resource):
    name, label, axis = PARAMS, PARAMS, "parameter budget"  # its label is its name
    order = 1
    sweep_defaults = (0.3,)
    demo_default = 0.4
    checked_by = "parameters counted from the module"

    def count(self, model, example_input):
        return sum(p.numel() for p in model.parameters())

    def dense_cost(self, layer):
        return layer.params

    def rank_cost(self, layer, scheme):
        return scheme.params_per_rank(layer.weight_shape), scheme.fixed_params(layer.module)


register(Params())
