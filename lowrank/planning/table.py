"""The layer table: one model's layers, what they cost and their bases, held together.

Each part does one job in a module of its own; the table only builds them once and hands
them on: recording and selection (:mod:`lowrank.layers`: which layers, their shapes, why a
layer stays dense), the graph (:mod:`lowrank.layers.graph`), prices per resource
(:mod:`lowrank.resources`, computed once per resource and settings), the SVDs in the basis
in use (:class:`lowrank.factorise.basis.Bases`), the problem (:mod:`.problem`) and the
printout (:mod:`.summary`).

MACs agree with ``FlopCounterMode`` FLOPs / 2 for one pass of the example input, and matmuls
outside any layer (e.g. attention scores) are a fixed cost; parameters are every parameter,
once. A factorised layer at rank r costs ``fixed + r * per_rank`` in each counted resource:
linear in r, which is what makes budgets linear constraints on singular-value masks.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import networkx as nx
from torch import nn

from .. import kinds, resources
from ..budget import Budget
from ..factorise.basis import Bases, check_finite
from ..factorise.masked import MaskedModel
from ..layers.channels import mark_prunable
from ..layers.graph import build_graph
from ..layers.inventory import Layer, as_predicate, select_layers
from ..layers.record import record_layers
from ..util.checks import check_module
from ..util.parametrized import folded, folded_from
from ..resources import Prices
from ..solvers import Group, Problem
from .problem import build_problem, layer_group
from .summary import summary

class LayerTable:
    """Every layer with weights, their prices per resource, the model graph, and cached SVDs.

    Built from one forward pass of ``example_input`` (a tensor, tuple or dict of inputs).
    The model is not modified.
    """

    def __init__(self, model: nn.Module, example_input: Any, include: Callable[[str], bool] | Sequence[str] | None = None):
        """``include``: which layers may be factorised, as a predicate on the layer name or a
        list of name prefixes (default: every layer a registered scheme accepts)."""
        check_module(model)
        self.model = model = folded(model)  # parametrized weights as plain ones, on a copy (lowrank.util.parametrized)
        self.example_input = example_input
        self.include = as_predicate(include)
        self.layers: dict[str, Layer] = select_layers(record_layers(model, example_input), self.include)
        for name, what in folded_from(model).items():
            if name in self.layers:
                self.layers[name].folded = ", ".join(what)
        self.pruning_note = mark_prunable(model, example_input, self.layers)  # "" unless no conv can be pruned
        self.graph: nx.DiGraph = build_graph(model, [n for n, l in self.layers.items() if l.calls])
        self.bases = Bases(model, {l.name: l for l in self.compressible})
        self._prices: dict[tuple, Prices] = {}

    # --- layers ----------------------------------------------------------------------------
    @property
    def compressible(self) -> list[Layer]:
        return [l for l in self.layers.values() if l.compressible]

    @property
    def kept_dense(self) -> list[Layer]:
        return [l for l in self.layers.values() if not l.compressible]

    def scheme_for(self, name: str, scheme: str) -> str:
        """The scheme a layer uses when ``scheme`` is asked for (a Linear has only the default)."""
        return self.layers[name].scheme_for(scheme)

    # --- costs -----------------------------------------------------------------------------
    def prices(self, resource: str, settings: Any = None) -> Prices:
        """The model's costs in ``resource`` (measured on ``settings`` where it is measured),
        computed once."""
        key = (resource, settings)
        if key not in self._prices:
            self._prices[key] = resources.get(resource).price(self.layers.values(), self.model, self.example_input, settings)
        return self._prices[key]

    def prices_of(self, names: Sequence[str], settings: Mapping[str, Any] | None = None) -> dict[str, Prices]:
        """Prices per resource of ``names`` (in order), each on its ``settings`` (by resource name)."""
        settings = settings or {}
        return {n: self.prices(n, settings.get(n)) for n in names}

    def totals_of(self, names: Sequence[str], settings: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The original model's total per resource."""
        return {n: p.total for n, p in self.prices_of(names, settings).items()}

    @property
    def totals(self) -> dict[str, float]:
        """Totals of the resources every problem prices (MACs and parameters)."""
        return self.totals_of(resources.priced())

    @property
    def total_macs(self) -> int:
        return self.totals[resources.MACS]

    @property
    def total_params(self) -> int:
        return self.totals[resources.PARAMS]

    @property
    def other_macs(self) -> int:
        """MACs of matmuls outside any layer (attention scores, functional linears)."""
        return max(0, self.total_macs - sum(l.macs for l in self.layers.values()))

    def dense_base_cost(self, names: Sequence[str] | None = None, settings: Mapping[str, Any] | None = None) -> list[float]:
        """Cost per resource of everything that is never factorised."""
        names = resources.priced() if names is None else names
        compressible = [l.name for l in self.compressible]
        return [p.base(compressible) for p in self.prices_of(names, settings).values()]

    # --- bases and views -------------------------------------------------------------------
    @property
    def basis(self):
        """The basis in use (``.kind``: "weight" or "activation")."""
        return self.bases.current

    def use_basis(self, kind: str = "weight", batches=None, ridge: float = 1e-2, progress: bool = False) -> None:
        """Truncate in the weight basis (``"weight"``, the default) or the data-aware one
        (``"activation"``: whitened by each layer's input on ``batches`` of calibration data,
        a list of (inputs, targets) pairs, streamed once: ``progress`` shows a bar over them).
        Every SVD, problem and rebuild follows."""
        self.bases.use(kind, batches, ridge, progress)

    def svd(self, name: str, scheme: str):
        """(U, s, Vh) of the layer's matrix under ``scheme``; computed once and cached."""
        return self.bases.svd(name, self.scheme_for(name, scheme))

    def svds(self, scheme: str) -> dict[str, tuple]:
        """Every compressible layer's weight-basis (U, s, Vh) under ``scheme``: what a disk cache stores."""
        return self.bases.weight_svds(lambda name: self.scheme_for(name, scheme))

    def load_svds(self, scheme: str, svds: Mapping[str, tuple]) -> None:
        """Reuse SVDs computed earlier (``svds(scheme)`` of the same weights) instead of recomputing."""
        self.bases.load_weight_svds(lambda name: self.scheme_for(name, scheme), svds)

    def masked_model(self, schemes: str | Mapping[str, str] = kinds.DEFAULT_SCHEME, names=None) -> MaskedModel:
        """The model computing each compressible layer (or ``names``) as U diag(s * m) Vh."""
        names = [l.name for l in self.compressible] if names is None else list(names)
        chosen = {n: self.scheme_for(n, schemes if isinstance(schemes, str) else schemes[n]) for n in names}
        return MaskedModel(self.model, {n: self.bases.factors(n, s) for n, s in chosen.items()})

    # --- the solver problem ----------------------------------------------------------------
    def group(self, name: str, scheme: str) -> Group:
        """The layer as a solver group in the resources every problem prices."""
        return layer_group(self.layers[name], self.scheme_for(name, scheme), self.prices_of(resources.priced()), self.bases)

    def problem(self, budget: Budget, schemes: str | Mapping[str, str] = kinds.DEFAULT_SCHEME, objective=None,
                settings: Mapping[str, Any] | None = None) -> Problem:
        """The rank-allocation problem for ``budget``; ``schemes`` may be ``"auto"`` (all per
        layer); ``settings``: where each measured resource is measured, by resource name."""
        check_finite(self.model, [l.name for l in self.compressible])  # names every bad layer at once
        prices = self.prices_of(resources.priced(budget), settings)
        return build_problem(self.compressible, prices, self.bases, budget, schemes, objective)

    def summary(self) -> str:
        """A readable table of every layer, its costs and, for dense ones, why."""
        return summary(self.layers.values(), self.prices_of(resources.priced()))
