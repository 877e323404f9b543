"""Hugging Face ``Conv1D`` (GPT-2's layers): a Linear with a transposed weight, y = x W + b
with W of shape (in, out). Its matrix is W^T (out x in), as for ``nn.Linear``, and it is
rebuilt as a :class:`~lowrank.kinds.linear.FactorizedLinear`. Recognised by its class name
and ``nf`` attribute, so lowrank never imports transformers."""
from __future__ import annotations

from torch import nn

from .base import LayerScheme, register
from .linear import FactorizedLinear


def is_hf_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


class HFConv1DChannel(LayerScheme):
    module_type, kind, name = nn.Module, "hf_conv1d", "channel"
    label = "Hugging Face Conv1D"

    def accepts(self, module):
        return is_hf_conv1d(module)

    def matrix(self, weight):
        return weight.T

    def weight(self, matrix, shape):
        return matrix.T

    def matrix_shape(self, weight_shape):
        in_f, out_f = weight_shape
        return (out_f, in_f)

    def input_vectors(self, module, x):
        return x.reshape(-1, x.shape[-1])

    def dense_macs(self, module, calls):
        in_f, out_f = module.weight.shape
        return sum(numel for _, _, numel in calls) * in_f

    def macs_per_rank(self, module, calls):
        in_f, out_f = module.weight.shape
        rows = sum(numel // out_f for _, _, numel in calls)  # tokens over all calls
        return rows * (in_f + out_f)

    def factorized(self, dense, rank, factors):
        return FactorizedLinear.from_factors(factors, rank, dense.bias, like=dense.weight)


register(HFConv1DChannel())
