"""MACs: multiply-accumulates of conv, linear and matmul ops for one pass of the example
input (bias adds excluded); the independent count is ``FlopCounterMode`` FLOPs / 2."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..util.inputs import call_model
from ..util.modes import evaluating
from .base import Resource, register


class Macs(Resource):
    name, label, axis = "macs", "MACs", "MAC budget"
    order = 0
    checked_by = "torch.utils.flop_counter MACs"

    def amount(self, value):
        return f"{value:,.0f} MACs per sample"

    def count(self, model, example_input):
        with torch.no_grad(), evaluating(model), FlopCounterMode(display=False) as counter:
            call_model(model, example_input)
        return counter.get_total_flops() // 2

    def dense_cost(self, layer):
        return layer.macs

    def rank_cost(self, layer, scheme):
        return scheme.macs_per_rank(layer.module, layer.calls), 0


register(Macs())
