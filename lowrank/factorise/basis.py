"""The basis each layer is truncated in, as SVD factors per (layer, scheme), computed once
and cached: the weight basis (the weight matrix's SVD; a sweep also stores these on disk)
or the activation basis (the SVD whitened by the layer's input on calibration data).
:class:`Bases` holds both for one model and says which one is in use."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .. import kinds
from ..util.inputs import call_checked
from ..util.modes import evaluating

BASES = ("weight", "activation")

# Weights up to this many elements are decomposed in float64 (cheap, and exact to 1e-12).
FLOAT64_MAX_ELEMENTS = 1 << 24


def weight_svd(weight: torch.Tensor, scheme: kinds.LayerScheme):
    """Thin SVD (U, s, Vh) of the scheme's matrix; float64 where the weight is small enough."""
    m = weight.detach()
    dtype = torch.float64 if m.numel() <= FLOAT64_MAX_ELEMENTS else torch.float32
    return torch.linalg.svd(scheme.matrix(m).to(dtype), full_matrices=False)


def check_finite(model: nn.Module, names) -> None:
    """Refuse layers whose weights hold NaN or infinity, naming each (an SVD of them fails
    with a message that names none, or returns garbage)."""
    bad = []
    for name in names:
        w = model.get_submodule(name).weight.detach()
        nan, inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
        if nan or inf:
            bad.append(f"{name!r} ({nan} NaN, {inf} infinite of {w.numel()})")
    if bad:
        raise ValueError("NaN or infinite weights in layer(s) " + ", ".join(bad) + ": lowrank cannot factorise them. "
                         "Check that the checkpoint loaded correctly or that training did not diverge.")


class WeightBasis:
    """SVDs of a model's layer weights, by (layer name, scheme name)."""

    kind = "weight"

    def __init__(self, model: nn.Module):
        self.model = model
        self._cache: dict[tuple[str, str], tuple] = {}

    def svd(self, name: str, scheme: kinds.LayerScheme) -> tuple:
        key = (name, scheme.name)
        if key not in self._cache:
            check_finite(self.model, [name])
            self._cache[key] = tuple(weight_svd(self.model.get_submodule(name).weight, scheme))
        return self._cache[key]

    def load(self, name: str, scheme: str, factors: Mapping | tuple) -> None:
        """Reuse an SVD computed earlier for the same weights."""
        self._cache[(name, scheme)] = tuple(factors)


class ActivationBasis:
    """Data-aware SVDs: each layer's matrix whitened by the second moment S of what its input
    side sees on calibration data, so truncation minimises the layer's output error on that
    data rather than the weight error.

    With ``input_side == "cols"`` (Linear, channel convs): SVD of M S^(1/2) = U s Vh', stored as
    (U, s, Vh' S^(-1/2)); with ``"rows"`` (spatial convs): SVD of S^(1/2) M, stored as
    (S^(-1/2) U, s, Vh). Either way U diag(s) Vh is M again at full rank, and everything
    downstream (methods, masked model, surgery) uses the factors unchanged; only the
    singular values now measure output error on the data.

    S is singular when inputs are dead (ReLU zeros) or there are fewer samples than
    dimensions: S + lambda I is used, lambda = ``ridge`` x the mean eigenvalue of S, which keeps
    S^(-1/2) finite and bounds the amplification of never-excited directions by 1/sqrt(ridge).
    Memory: one d x d float64 moment per (layer, scheme) (``peak_bytes``), plus one layer's
    input vectors for one call while they are summed (convs unfold 16 samples at a time).
    """

    kind = "activation"

    def __init__(self, model: nn.Module, layers, batches, ridge: float = 1e-2):
        self.model, self.ridge = model, ridge
        self.key = batches_key(batches)  # which calibration tensors it was made from: LayerTable.use_basis reuses it
        self.moments = collect_moments(model, layers, batches)
        self.peak_bytes = sum(s.numel() * s.element_size() for s, _ in self.moments.values())
        self._cache: dict[tuple[str, str], tuple] = {}

    def svd(self, name: str, scheme: kinds.LayerScheme) -> tuple:
        key = (name, scheme.name)
        if key not in self._cache:
            check_finite(self.model, [name])
            total, n = self.moments[key]
            self._cache[key] = whitened_svd(self.model.get_submodule(name).weight, scheme, total / max(n, 1), self.ridge)
        return self._cache[key]


def batches_key(batches) -> tuple:
    """Identifies calibration batches by their input tensors (the same tensors, the same moments)."""
    return tuple(id(x) for x, _ in batches)


def collect_moments(model: nn.Module, layers, batches) -> dict[tuple[str, str], tuple[torch.Tensor, int]]:
    """One hooked pass over ``batches``: per (layer, scheme), the sum of v v^T over the input
    vectors v that the scheme's input side multiplies, and how many there were."""
    moments: dict[tuple[str, str], list] = {}

    def hook(name, schemes):
        def fn(module, args, out):
            x = args[0].detach()
            for scheme in schemes.values():
                total, n = scheme.input_moment(module, x)
                entry = moments.setdefault((name, scheme.name), [torch.zeros_like(total), 0])
                entry[0] += total
                entry[1] += n

        return fn

    handles = [model.get_submodule(l.name).register_forward_hook(hook(l.name, l.schemes)) for l in layers]
    try:
        with torch.no_grad(), evaluating(model):
            for x, _ in batches:
                call_checked(model, x)
    finally:
        for h in handles:
            h.remove()
    return {k: (v[0], v[1]) for k, v in moments.items()}


def whitened_svd(weight: torch.Tensor, scheme: kinds.LayerScheme, moment: torch.Tensor, ridge: float):
    """(U, s, Vh) with U diag(s) Vh = the scheme's matrix, truncation-optimal for output error
    under the input second moment ``moment`` (see :class:`ActivationBasis`)."""
    m = scheme.matrix(weight.detach()).to(torch.float64)
    lam, q = torch.linalg.eigh(moment.to(torch.float64))
    lam = lam.clamp_min(0.0) + ridge * max(float(lam.clamp_min(0.0).mean()), 1e-30)
    root, inv_root = (q * lam.sqrt()) @ q.T, (q * lam.rsqrt()) @ q.T
    if scheme.input_side == "cols":
        u, s, vh = torch.linalg.svd(m @ root, full_matrices=False)
        return u, s, vh @ inv_root
    u, s, vh = torch.linalg.svd(root @ m, full_matrices=False)
    return inv_root @ u, s, vh


class Bases:
    """A model's layers in the basis in use (:data:`BASES`), their SVDs cached per (layer,
    scheme): the weight basis always at hand (its SVDs are what a disk cache stores), the
    activation basis once made from calibration batches."""

    def __init__(self, model: nn.Module, layers: Mapping[str, object]):
        """``layers``: the compressible layers by name (each with its ``schemes``)."""
        self.model, self.layers = model, dict(layers)
        self.weight = WeightBasis(model)
        self.current: WeightBasis | ActivationBasis = self.weight

    @property
    def kind(self) -> str:
        return self.current.kind

    def use(self, kind: str = "weight", batches=None, ridge: float = 1e-2) -> None:
        """Truncate in the weight basis or the data-aware one (whitened by each layer's input
        on ``batches``, a list of (inputs, targets) pairs); made once per batches and ridge."""
        if kind not in BASES:
            raise ValueError(f"unknown basis {kind!r}; choose one of {', '.join(BASES)}")
        if kind == "weight":
            self.current = self.weight
            return
        if not batches:
            raise ValueError("the activation basis needs calibration data (batches of inputs)")
        reusable = isinstance(self.current, ActivationBasis) and self.current.key == batches_key(batches) and self.current.ridge == ridge
        if not reusable:
            self.current = ActivationBasis(self.model, list(self.layers.values()), batches, ridge)

    def svd(self, name: str, scheme: str) -> tuple:
        """(U, s, Vh) of the layer's matrix under ``scheme`` (a name the layer has), in the basis in use."""
        return self.current.svd(name, self.layers[name].schemes[scheme])

    def factors(self, name: str, scheme: str) -> tuple:
        """(scheme object, U, s, Vh): what a masked or factorised layer is made of."""
        return (self.layers[name].schemes[scheme], *self.svd(name, scheme))

    def weight_svds(self, scheme_of) -> dict[str, tuple]:
        """Every layer's weight-basis SVD under ``scheme_of(name)``: what a disk cache stores."""
        return {n: self.weight.svd(n, l.schemes[scheme_of(n)]) for n, l in self.layers.items()}

    def load_weight_svds(self, scheme_of, svds: Mapping[str, tuple]) -> None:
        """Reuse weight-basis SVDs computed earlier (:meth:`weight_svds` of the same weights)."""
        for name, factors in svds.items():
            if name not in self.layers:
                raise ValueError(f"cached SVD for {name!r}, which is not a compressible layer of this model")
            self.weight.load(name, scheme_of(name), factors)
