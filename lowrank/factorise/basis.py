"""The basis each layer is truncated in, as SVD factors per (layer, scheme), computed once
and cached: the weight basis (the weight matrix's SVD; a sweep also stores these on disk)
or the activation basis (the SVD whitened by the layer's input on calibration data).
:class:`Bases` holds both for one model and says which one is in use."""
from __future__ import annotations

import sys
from typing import Mapping

import torch
from torch import nn
from tqdm import tqdm

from .. import kinds
from ..util.inputs import call_checked
from ..util.modes import evaluating

BASES = ("weight", "activation")

BAR_DELAY = 2.0  # seconds a calibration pass runs before its bar shows: a quick one (a small CNN) stays silent

# Weights up to this many elements are decomposed in float64 (cheap, and exact to 1e-12).
FLOAT64_MAX_ELEMENTS = 1 << 24


def weight_svd(weight: torch.Tensor, scheme: kinds.LayerScheme):
    """Thin SVD (U, s, Vh) of the scheme's matrix; float64 where the weight is small enough."""
    m = weight.detach()
    if scheme.selects:
        return scheme.selection(m)
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
    shifts: dict = {}  # no data: a pruned conv's dropped channels leave nothing to its bias

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

    Only the smaller side of the matrix is ever squared. Where the input side (d) is the
    smaller, S (d x d) is summed and the SVD taken as above (:func:`whitened_svd`). Where the
    other side (k) is, the inputs are projected onto the matrix as they arrive and only the
    k x k Gram of the layer's whitened outputs is summed (:func:`projected_svd`): VGG-16's first
    classifier layer (4,096 x 25,088) needs a 4,096-square matrix, not a 25,088-square one.

    S is singular when inputs are dead (ReLU zeros) or there are fewer samples than
    dimensions: S + lambda I is used, lambda = ``ridge`` x the mean eigenvalue of S, which keeps
    S^(-1/2) finite and bounds the amplification of never-excited directions by 1/sqrt(ridge).
    Memory: one float64 Gram per (layer, scheme) of the smaller side squared (``peak_bytes``),
    plus one layer's input vectors for one call while they are summed (convs unfold 16
    samples at a time).
    """

    kind = "activation"

    def __init__(self, model: nn.Module, layers, batches, ridge: float = 1e-2, progress: bool = False):
        self.model, self.ridge = model, ridge
        self.key = batches_key(batches)  # which calibration tensors it was made from: LayerTable.use_basis reuses it
        projections = {(l.name, scheme.name): input_side_matrix(model.get_submodule(l.name).weight, scheme)
                       for l in layers for scheme in l.schemes.values() if projects(scheme, l.weight_shape)}
        self.moments = collect_moments(model, layers, batches, projections, progress)
        self.projected = set(projections)
        self.peak_bytes = sum(s.numel() * s.element_size() for s, _, _ in self.moments.values())
        self._cache: dict[tuple[str, str], tuple] = {}
        self.shifts: dict[tuple[str, str], torch.Tensor] = {}  # a selection's dropped-channel means (prune)

    def svd(self, name: str, scheme: kinds.LayerScheme) -> tuple:
        key = (name, scheme.name)
        if key not in self._cache:
            check_finite(self.model, [name])
            gram, n, trace = self.moments[key]
            weight = self.model.get_submodule(name).weight
            if scheme.selects:  # channels ranked by what each carries, their means kept (Conv2dPrune.from_moment)
                u, s, vh, self.shifts[key] = scheme.from_moment(weight, gram, n, self.ridge)
                self._cache[key] = (u, s, vh)
            elif key in self.projected:
                self._cache[key] = projected_svd(weight, scheme, gram, n, trace, self.ridge)
            else:
                self._cache[key] = whitened_svd(weight, scheme, gram / max(n, 1), self.ridge)
        return self._cache[key]


def projects(scheme: kinds.LayerScheme, weight_shape) -> bool:
    """Whether the matrix's other side is at most its input side (then the Gram of the
    projected inputs is the smaller one to sum)."""
    rows, cols = scheme.matrix_shape(weight_shape)
    inputs, other = (cols, rows) if scheme.input_side == "cols" else (rows, cols)
    return other <= inputs and not scheme.selects  # a selection needs each input channel's own power


def input_side_matrix(weight: torch.Tensor, scheme: kinds.LayerScheme) -> torch.Tensor:
    """The scheme's matrix as its input vectors meet it: d x k (M^T for a cols-input matrix);
    float64 where small enough (see FLOAT64_MAX_ELEMENTS), else float32."""
    m = scheme.matrix(weight.detach())
    m = m.T if scheme.input_side == "cols" else m
    return m.to(torch.float64 if m.numel() <= FLOAT64_MAX_ELEMENTS else torch.float32)


def batches_key(batches) -> tuple:
    """Identifies calibration batches by their input tensors (the same tensors, the same moments)."""
    return tuple(id(x) for x, _ in batches)


def collect_moments(model: nn.Module, layers, batches, projections=None, progress: bool = False) -> dict[tuple[str, str], tuple[torch.Tensor, int, float]]:
    """One hooked pass over ``batches``: per (layer, scheme), the sum of v v^T over the input
    vectors v that the scheme's input side multiplies (or of p p^T, p = v projected by
    ``projections[(layer, scheme)]`` where given), how many there were, and the sum of their
    squared norms. No activation is kept: the memory is the sums', whatever the batches.
    ``progress``: a bar over the batches."""
    projections = projections or {}
    moments: dict[tuple[str, str], list] = {}

    def hook(name, schemes):
        def fn(module, args, out):
            x = args[0].detach()
            for scheme in schemes.values():
                key = (name, scheme.name)
                total, n, trace = scheme.input_moment(module, x, projections.get(key))
                entry = moments.setdefault(key, [torch.zeros_like(total), 0, 0.0])
                entry[0] += total
                entry[1] += n
                entry[2] += trace

        return fn

    handles = [model.get_submodule(l.name).register_forward_hook(hook(l.name, l.schemes)) for l in layers]
    try:
        with torch.no_grad(), evaluating(model):
            for x, _ in tqdm(batches, desc="calibration", unit="batch", disable=not progress, leave=False, file=sys.stderr,
                             delay=BAR_DELAY):
                call_checked(model, x)
    finally:
        for h in handles:
            h.remove()
    return {k: (v[0], v[1], v[2]) for k, v in moments.items()}


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


def projected_svd(weight: torch.Tensor, scheme: kinds.LayerScheme, gram: torch.Tensor, count: int, squares: float, ridge: float):
    """The same factors as :func:`whitened_svd`, from the other side: with A the matrix seen
    from its input side (d x k), S = sum(v v^T) / count + lambda I and K = A^T S A
    = gram / count + lambda A^T A (k x k, ``gram`` = sum of (v A)^T (v A)), K = Q diag(s^2) Q^T
    gives the singular values s of the whitened matrix and its k-side vectors Q; the d side is
    A Q diag(1/s), where S^(1/2) and S^(-1/2) cancel. lambda = ``ridge`` x the mean eigenvalue of
    S (its trace / d, from ``squares``, the sum of the inputs' squared norms). The Gram's
    eigensolve is in float64; a matrix too big for float64 (see input_side_matrix) has its
    products and factors in float32."""
    a = input_side_matrix(weight, scheme)
    d = a.shape[0]
    lam = ridge * max(squares / max(count, 1) / d, 1e-30)
    k = gram.to(torch.float64) / max(count, 1) + lam * (a.T @ a).to(torch.float64)
    e, q = torch.linalg.eigh(k)
    e, q = e.flip(0), q.flip(1)  # descending
    s = e.clamp_min(0.0).sqrt()
    inv = torch.where(s > s[0] * 1e-12, 1.0 / s, torch.zeros_like(s)) if s[0] > 0 else torch.zeros_like(s)
    dtype = a.dtype  # float32 for a big matrix, as the weight basis does: its factors are as big as the weight
    q, s, side = q.to(dtype), s.to(dtype), (a @ q.to(dtype)) * inv.to(dtype)  # side: d x k
    if scheme.input_side == "cols":  # M = Q diag(s) (A Q diag(1/s))^T
        return q, s, side.T
    return side, s, q.T  # M = (A Q diag(1/s)) diag(s) Q^T


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

    def use(self, kind: str = "weight", batches=None, ridge: float = 1e-2, progress: bool = False) -> None:
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
            self.current = ActivationBasis(self.model, list(self.layers.values()), batches, ridge, progress)

    def svd(self, name: str, scheme: str) -> tuple:
        """(U, s, Vh) of the layer's matrix under ``scheme`` (a name the layer has), in the basis in use."""
        return self.current.svd(name, self.layers[name].schemes[scheme])

    def factors(self, name: str, scheme: str) -> tuple:
        """(scheme object, U, s, Vh[, shift]): what a masked or factorised layer is made of;
        ``shift`` where a pruned conv's bias takes over its dropped channels' means."""
        shift = self.current.shifts.get((name, scheme))
        return (self.layers[name].schemes[scheme], *self.svd(name, scheme)) + ((shift,) if shift is not None else ())

    def weight_svds(self, scheme_of) -> dict[str, tuple]:
        """Every layer's weight-basis SVD under ``scheme_of(name)``: what a disk cache stores."""
        return {n: self.weight.svd(n, l.schemes[scheme_of(n)]) for n, l in self.layers.items()}

    def load_weight_svds(self, scheme_of, svds: Mapping[str, tuple]) -> None:
        """Reuse weight-basis SVDs computed earlier (:meth:`weight_svds` of the same weights)."""
        for name, factors in svds.items():
            if name not in self.layers:
                raise ValueError(f"cached SVD for {name!r}, which is not a compressible layer of this model")
            self.weight.load(name, scheme_of(name), factors)
