"""What every layer scheme is (:class:`LayerScheme`), the registry of schemes, and helpers
the scheme files share. See the package doc (:mod:`lowrank.kinds`)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


Call = tuple  # (input shape, output shape, output numel) of one call, as recorded


class LayerScheme:
    """How layers of ``module_type`` are factorised under scheme ``name``."""

    module_type: type = nn.Module
    kind: str = ""  # the layer kind shown in tables: "linear", "conv2d", ...
    name: str = ""  # the scheme: "channel", "spatial", ...
    condition: str = ""  # what :meth:`accepts` asks beyond the type, in words
    input_side: str = "cols"  # which side of the matrix multiplies the layer's input: "cols" or "rows"
    selects: bool = False  # the basis selects input channels (``prune``) instead of being the matrix's SVD

    @property
    def label(self) -> str:
        """The layers it takes, in words: ``nn.Conv2d (groups=1)``."""
        return f"nn.{self.module_type.__name__}" + (f" ({self.condition})" if self.condition else "")

    def accepts(self, module: nn.Module) -> bool:
        """Whether this scheme can factorise ``module`` (subclasses narrow it, e.g. groups == 1)."""
        return isinstance(module, self.module_type)

    # --- weight <-> matrix ---------------------------------------------------------------
    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Inverse of :meth:`matrix` for a weight of ``shape``."""
        raise NotImplementedError

    def matrix_shape(self, weight_shape: Sequence[int]) -> tuple[int, int]:
        raise NotImplementedError

    # --- costs ---------------------------------------------------------------------------
    def dense_macs(self, module: nn.Module, calls: Sequence[Call]) -> int:
        """MACs of the dense layer over its recorded calls (bias adds excluded)."""
        return sum(numel for _, _, numel in calls) * math.prod(module.weight.shape[1:])

    def macs_per_rank(self, module: nn.Module, calls: Sequence[Call]) -> int:
        """MACs that one kept singular value costs, over the recorded calls."""
        raise NotImplementedError

    def full_rank(self, weight_shape: Sequence[int]) -> int:
        """How many values the layer has under this scheme (the matrix's rank for an SVD)."""
        return min(self.matrix_shape(weight_shape))

    def params_per_rank(self, weight_shape: Sequence[int]) -> int:
        """One kept value is a column of U and a row of Vh: rows + cols parameters."""
        return sum(self.matrix_shape(weight_shape))

    def fixed_params(self, module: nn.Module) -> int:
        """Parameters the factorised layer has at any rank: the bias, where the layer has one."""
        bias = getattr(module, "bias", None)
        return bias.numel() if bias is not None else 0

    def input_vectors(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The (n, d) vectors the input side of the matrix multiplies, for one call on ``x``
        (d = the matrix's cols, or rows when ``input_side == "rows"``): what a data-aware
        basis whitens by."""
        raise NotImplementedError

    def input_moment(self, module: nn.Module, x: torch.Tensor, project: torch.Tensor | None = None):
        """(sum of p p^T, the number of input vectors, the sum of their squared norms) over the
        input vectors v of one call on ``x``, in float64; p = v, or v @ ``project`` (the matrix
        seen from its input side, d x k) when the other side of the matrix is the smaller."""
        v = self.input_vectors(module, x).double()
        trace = float((v * v).sum())
        if project is not None:
            v = (v.to(project.dtype) @ project).double()
        return v.T @ v, v.shape[0], trace

    # --- the factorised module -------------------------------------------------------------
    def factorized(self, dense: nn.Module, rank: int, factors) -> nn.Module:
        """The two-layer module at ``rank`` from ``factors`` = (U, s, Vh) of :meth:`matrix`."""
        raise NotImplementedError

    def timed(self, dense: nn.Module, rank: int, inputs: list):
        """(module, inputs) whose time is what the layer costs at ``rank`` as deployed: the
        factorised module on the layer's own inputs (any factors will do)."""
        rows, cols = self.matrix_shape(tuple(dense.weight.shape))
        kw = dict(device=dense.weight.device, dtype=dense.weight.dtype)
        factors = (torch.randn(rows, rank, **kw), torch.ones(rank, **kw), torch.randn(rank, cols, **kw))
        return self.factorized(dense, rank, factors), inputs


def pad_mode(conv: nn.Module) -> str:
    """The ``F.pad`` mode that reproduces a conv's own padding ("zeros" is "constant")."""
    return "constant" if conv.padding_mode == "zeros" else conv.padding_mode


_SCHEMES: list[LayerScheme] = []

# The scheme every layer kind has (a Linear has no other): what compress, rebuild, sweeps and
# the CLI use when none is asked for.
DEFAULT_SCHEME = "channel"


def register(scheme: LayerScheme) -> LayerScheme:
    if any(type(s) is type(scheme) for s in _SCHEMES):
        raise ValueError(f"scheme {type(scheme).__name__} registered twice")
    _SCHEMES.append(scheme)
    return scheme


def schemes() -> tuple[LayerScheme, ...]:
    """Every registered scheme object, in registration order."""
    return tuple(_SCHEMES)


def scheme_names() -> tuple[str, ...]:
    """Every scheme name, in registration order (:data:`DEFAULT_SCHEME` first)."""
    return tuple(dict.fromkeys(s.name for s in _SCHEMES))


def check_scheme(name: str) -> str:
    if name not in scheme_names():
        raise ValueError(f"unknown scheme {name!r}; choose one of {', '.join(scheme_names())}")
    return name


def schemes_for(module: nn.Module) -> dict[str, LayerScheme]:
    """The schemes that can factorise ``module``, by name (empty: it stays dense)."""
    return {s.name: s for s in _SCHEMES if s.accepts(module)}


def supported() -> str:
    """The layer types some scheme factorises, in words: for messages."""
    return ", ".join(dict.fromkeys(s.label for s in _SCHEMES))


def split_factors(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int):
    """First factor sqrt(S) Vh (rank x cols), second U sqrt(S) (rows x rank): balanced
    scales help later fine-tuning."""
    root = s[:rank].sqrt()
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :]


def absorb_channel_affine(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold ``y * scale + shift`` per output channel (a BatchNorm in eval mode after the layer)
    into a factorised layer: into its second factor, or its bias at rank 0. Exact: the second
    factor is the only one whose outputs are channels."""
    second = getattr(layer, "second", None)
    target = second if second is not None else layer
    with torch.no_grad():
        if second is not None:
            weight = second.weight
            weight.mul_(scale.reshape(-1, *([1] * (weight.dim() - 1))).to(weight.dtype))
        bias = getattr(target, "bias", None)
        if bias is None:
            if hasattr(target, "bias"):
                delattr(target, "bias")
            target.register_parameter("bias", nn.Parameter(shift.detach().clone()))
        else:
            bias.mul_(scale).add_(shift)

