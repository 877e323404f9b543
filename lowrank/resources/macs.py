"""MACs: multiply-accumulates of conv, linear and matmul ops for one pass of the example
input (bias adds excluded). The independent count is ``FlopCounterMode`` FLOPs / 2, with the
modules it cannot see (recurrent layers, fused attention) priced by formula and any op nobody
can price named (:mod:`lowrank.layers.unseen`)."""
from __future__ import annotations

import torch

from ..layers.unseen import UnseenCounter
from ..solvers import MACS
from ..util.inputs import call_model
from ..util.modes import evaluating
from .base import Prices, Resource, register


class Macs(Resource):
    name, label, axis = MACS, "MACs", "MAC budget"
    order = 0
    sweep_defaults = (0.3, 0.5, 0.7)  # the default sweep's budgets (fractions of the original)
    demo_default = 0.5
    checked_by = "torch.utils.flop_counter MACs"

    def amount(self, value):
        return f"{value:,.0f} MACs per sample"

    def tally(self, model, example_input) -> UnseenCounter:
        with torch.no_grad(), evaluating(model), UnseenCounter(model) as counter:
            call_model(model, example_input)
        return counter

    def count(self, model, example_input):
        return self.tally(model, example_input).macs

    def price(self, layers, model, example_input, settings=None):
        tally = self.tally(model, example_input)
        unknown = tuple(f"{repr(module) if module else 'the model itself'} runs aten.{op}" for module, op in tally.unknown)
        return Prices(self.name, tally.macs, self.layer_prices(layers), unknown)

    def dense_cost(self, layer):
        return layer.macs

    def rank_cost(self, layer, scheme):
        return scheme.macs_per_rank(layer.module, layer.calls), 0


register(Macs())
