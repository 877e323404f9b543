"""The layer table: which layers a model has, their shapes, and what each costs.

Built from one forward pass of an example input (see :mod:`.record`). Layers that some
registered layer scheme accepts (:mod:`lowrank.kinds`: Linear, Conv2d with groups=1) are
compressible; every other layer that owns weights is listed as kept dense, with the reason.
Costs come from the registered resources (:mod:`lowrank.resources`): MACs agree with
``FlopCounterMode`` FLOPs / 2 for one pass of the example input, and matmuls outside any
layer (e.g. attention scores) are a fixed cost; parameters are every parameter, once.

A factorised layer at rank r costs ``fixed + r * per_rank`` in each resource: linear in r,
which is what makes budgets linear constraints on singular-value masks.

The table composes four parts with one job each: recording (:mod:`.record`), pricing
(:mod:`.pricing`), the SVD cache (:mod:`.basis`) and the bridge to a solver problem
(:mod:`.bridge`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import networkx as nx
from torch import nn

from solvers import Group, Problem

from .. import kinds, resources
from ..budget import Budget
from .basis import BASES, ActivationBasis, WeightBasis, batches_key, check_finite
from .bridge import build_problem, layer_group
from .graph import build_graph
from .masked import MaskedModel
from .pricing import LayerInfo, SchemeCost, layer_info  # noqa: F401  (SchemeCost: part of the table's API)
from .record import record_layers


class LayerTable:
    """Every layer with weights, their costs per scheme, the model graph, and cached SVDs.

    Built from one forward pass of ``example_input`` (a tensor, tuple or dict of inputs).
    The model is not modified.
    """

    def __init__(self, model: nn.Module, example_input: Any, include: Callable[[str], bool] | Sequence[str] | None = None):
        """``include``: which layers may be factorised, as a predicate on the layer name or a
        list of name prefixes (default: every layer a registered scheme accepts)."""
        self.model = model
        self.example_input = example_input
        if include is not None and not callable(include):
            prefixes = tuple(include)
            include = lambda name: name.startswith(prefixes)  # noqa: E731
        self.include = include
        self.layers: dict[str, LayerInfo] = {
            r.name: layer_info(r, include, resources.priced()) for r in record_layers(model, example_input)
        }
        self._totals: dict[str, float] = {}
        self.weight_basis = WeightBasis(model)
        self.basis: WeightBasis | ActivationBasis = self.weight_basis
        self.graph: nx.DiGraph = build_graph(model, [n for n in self.layers if self.layers[n].calls])

    # --- layers ----------------------------------------------------------------------------
    @property
    def compressible(self) -> list[LayerInfo]:
        return [l for l in self.layers.values() if l.compressible]

    @property
    def kept_dense(self) -> list[LayerInfo]:
        return [l for l in self.layers.values() if not l.compressible]

    def scheme_for(self, name: str, scheme: str) -> str:
        """The scheme a layer uses when ``scheme`` is asked for (a Linear has only ``channel``)."""
        kinds.check_scheme(scheme)
        layer = self.layers[name]
        return scheme if scheme in layer.costs else next(iter(layer.costs))

    # --- costs -----------------------------------------------------------------------------
    def price(self, names: Sequence[str]) -> None:
        """Make sure every layer is priced in the resources ``names`` (expensive ones on demand,
        together with the model's total: a measured resource's costs are only comparable on the
        clock its total was timed on, see :meth:`totals_of`)."""
        for layer in self.layers.values():
            layer.price(names)
        self.totals_of([n for n in names if not resources.get(n).cheap])

    def totals_of(self, names: Sequence[str]) -> dict[str, float]:
        """The original model's total per resource, counted once each on the whole model (a
        measured resource is timed together with the layers it prices, so they share a clock)."""
        for name in names:
            if name not in self._totals:
                for layer in self.layers.values():
                    layer.price([name])
                self._totals[name] = resources.get(name).measure_total(self)
        return {n: self._totals[n] for n in names}

    @property
    def totals(self) -> dict[str, float]:
        """Totals of the resources every problem prices (MACs and parameters)."""
        return self.totals_of(resources.priced())

    @property
    def total_macs(self) -> int:
        return self.totals["macs"]

    @property
    def total_params(self) -> int:
        return self.totals["params"]

    @property
    def other_macs(self) -> int:
        """MACs of matmuls outside any layer (attention scores, functional linears)."""
        return max(0, self.total_macs - sum(l.macs for l in self.layers.values()))

    def dense_base_cost(self, names: Sequence[str] | None = None) -> list[float]:
        """Cost per resource of everything that is never factorised."""
        names = resources.priced() if names is None else names
        self.price(names)
        totals = self.totals_of(names)
        return [max(0, totals[r] - sum(l.dense[r] for l in self.compressible)) for r in names]

    # --- bases and views -------------------------------------------------------------------
    def use_basis(self, kind: str = "weight", batches=None, ridge: float = 1e-2) -> None:
        """Truncate in the weight basis (``"weight"``, the default) or the data-aware one
        (``"activation"``: whitened by each layer's input on ``batches`` of calibration data,
        a list of (inputs, targets) pairs). Every SVD, problem and rebuild follows."""
        if kind not in BASES:
            raise ValueError(f"unknown basis {kind!r}; choose one of {', '.join(BASES)}")
        if kind == "weight":
            self.basis = self.weight_basis
            return
        if not batches:
            raise ValueError("the activation basis needs calibration data (batches of inputs)")
        reusable = isinstance(self.basis, ActivationBasis) and self.basis.key == batches_key(batches) and self.basis.ridge == ridge
        if not reusable:
            self.basis = ActivationBasis(self.model, self.compressible, batches, ridge)


    def svd(self, name: str, scheme: str):
        """(U, s, Vh) of the layer's matrix under ``scheme``; computed once and cached."""
        scheme = self.scheme_for(name, scheme)
        return self.basis.svd(name, self.layers[name].scheme_objects[scheme])

    def svds(self, scheme: str) -> dict[str, tuple]:
        """Every compressible layer's weight-basis (U, s, Vh) under ``scheme``: what a disk cache stores."""
        return {l.name: self.weight_basis.svd(l.name, l.scheme_objects[self.scheme_for(l.name, scheme)]) for l in self.compressible}

    def load_svds(self, scheme: str, svds: Mapping[str, tuple]) -> None:
        """Reuse SVDs computed earlier (``svds(scheme)`` of the same weights) instead of recomputing."""
        for name, factors in svds.items():
            if name not in self.layers or not self.layers[name].compressible:
                raise ValueError(f"cached SVD for {name!r}, which is not a compressible layer of this model")
            self.weight_basis.load(name, self.scheme_for(name, scheme), factors)

    def masked_model(self, schemes: str | Mapping[str, str] = "channel", names=None) -> MaskedModel:
        """The model computing each compressible layer (or ``names``) as U diag(s * m) Vh."""
        names = [l.name for l in self.compressible] if names is None else list(names)
        factors = {}
        for n in names:
            scheme = self.scheme_for(n, schemes if isinstance(schemes, str) else schemes[n])
            factors[n] = (self.layers[n].scheme_objects[scheme], *self.svd(n, scheme))
        return MaskedModel(self.model, factors)

    # --- the solver problem ----------------------------------------------------------------
    def group(self, name: str, scheme: str) -> Group:
        """The layer as a solver group: singular values, cost per kept value, dense fallback."""
        return layer_group(self, name, scheme, resources.priced())

    def problem(self, budget: Budget, schemes: str | Mapping[str, str] = "channel", objective=None) -> Problem:
        """The rank-allocation problem for ``budget``; ``schemes`` may be ``"auto"`` (all per layer)."""
        check_finite(self.model, [l.name for l in self.compressible])  # names every bad layer at once
        return build_problem(self, budget, schemes, objective)

    def summary(self) -> str:
        """A readable table of every layer, its costs and, for dense ones, why."""
        shown = resources.priced()
        cols = "".join(f" {resources.get(r).heading:>12s}" for r in shown)
        lines = [f"{'layer':32s} {'kind':10s} {'weight':18s}{cols}  note"]
        for l in self.layers.values():
            note = "compressible: " + ", ".join(f"{s} rank {c.full_rank}" for s, c in l.costs.items()) if l.compressible else l.reason
            lines.append(f"{l.name:32s} {l.kind:10s} {str(l.weight_shape):18s}" + "".join(f" {l.dense[r]:12,.0f}" for r in shown) + f"  {note}")
        if self.other_macs:
            lines.append(f"{'(matmuls outside layers)':32s} {'':10s} {'':18s}" + "".join(f" {self.other_macs if r == 'macs' else 0:12,.0f}" for r in shown))
        totals = self.totals
        lines.append(f"{'total':32s} {'':10s} {'':18s}" + "".join(f" {totals[r]:12,.0f}" for r in shown))
        return "\n".join(lines)
