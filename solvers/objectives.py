"""Objectives for rank allocation.

- :class:`Separable`: one loss curve per group, ``curve[r]`` = loss when keeping the top r
  values (length full_rank + 1; the dense layer scores ``curve[full_rank]``). Built from the
  singular values (discarded energy, relative Frobenius or spectral error) or from measured
  per-layer losses at candidate ranks.
- :class:`Differentiable`: a callable giving the loss and its gradient with respect to the
  relaxed masks (one vector per group), e.g. the network's loss through a masked model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .problem import Group, Problem


@dataclass
class Separable:
    curves: dict[str, np.ndarray]  # group name -> loss at rank 0..full_rank
    name: str = "custom"

    def validate(self, problem: Problem) -> None:
        for g in problem.groups:
            if g.name not in self.curves:
                raise ValueError(f"objective {self.name!r} has no curve for group {g.name!r}")
            c = np.asarray(self.curves[g.name], dtype=np.float64)
            if c.shape != (g.full_rank + 1,):
                raise ValueError(
                    f"objective {self.name!r}: curve for {g.name!r} has shape {c.shape}, expected ({g.full_rank + 1},)"
                )
            if not np.all(np.isfinite(c)):
                raise ValueError(f"objective {self.name!r}: curve for {g.name!r} has NaN or infinite values")
            self.curves[g.name] = c

    def loss(self, group: Group, rank: int) -> float:
        """Loss of one group at ``rank`` (the dense fallback scores as full rank)."""
        return float(self.curves[group.name][group.normalise(rank)])

    def total(self, problem: Problem, ranks: Sequence[int], active: Sequence[bool]) -> float:
        return float(sum(self.loss(g, r) for g, r, a in zip(problem.groups, ranks, active) if a))


def _energy_tail(values: np.ndarray) -> np.ndarray:
    sq = values.astype(np.float64) ** 2
    tail = np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])  # tail[r] = sum_{i >= r} s_i^2
    return tail


def discarded_energy(problem: Problem, normalise: bool = True) -> Separable:
    """Sum of discarded squared singular values per layer (relative to the layer's total)."""
    curves = {}
    for g in problem.groups:
        tail = _energy_tail(g.values)
        curves[g.name] = tail / tail[0] if normalise and tail[0] > 0 else tail
    return Separable(curves, "energy")


def frobenius_error(problem: Problem) -> Separable:
    """Relative Frobenius error ||W - W_r|| / ||W|| per layer."""
    curves = {}
    for g in problem.groups:
        tail = _energy_tail(g.values)
        curves[g.name] = np.sqrt(tail / tail[0]) if tail[0] > 0 else np.zeros_like(tail)
    return Separable(curves, "frobenius")


def spectral_error(problem: Problem) -> Separable:
    """Relative spectral error s_r / s_0 per layer (0 at full rank)."""
    curves = {}
    for g in problem.groups:
        s = g.values
        curves[g.name] = np.concatenate([s / s[0], [0.0]]) if s[0] > 0 else np.zeros(s.size + 1)
    return Separable(curves, "spectral")


def from_samples(problem: Problem, samples: Mapping[str, tuple[Sequence[int], Sequence[float]]], name="measured") -> Separable:
    """Curves from losses measured at a few candidate ranks per group.

    Between candidates the curve is held at the next lower measured rank's loss (a rank is
    never credited with a loss it was not measured to reach); rank 0 and full rank must be
    among the candidates.
    """
    curves = {}
    for g in problem.groups:
        if g.name not in samples:
            raise ValueError(f"no measured losses for group {g.name!r}")
        ranks, losses = (np.asarray(a) for a in samples[g.name])
        order = np.argsort(ranks)
        ranks, losses = ranks[order].astype(int), losses[order].astype(np.float64)
        if ranks[0] != 0 or ranks[-1] != g.full_rank:
            raise ValueError(f"group {g.name!r}: measured ranks must include 0 and {g.full_rank}")
        if not np.all(np.isfinite(losses)):
            raise ValueError(f"group {g.name!r}: measured losses contain NaN or infinity")
        idx = np.searchsorted(ranks, np.arange(g.full_rank + 1), side="right") - 1
        curves[g.name] = losses[idx]
    return Separable(curves, name)


SEPARABLE = {"energy": discarded_energy, "frobenius": frobenius_error, "spectral": spectral_error}


def separable_objective(problem: Problem, objective=None) -> Separable:
    """The problem's objective as a Separable; defaults to discarded energy."""
    objective = problem.objective if objective is None else objective
    if objective is None:
        objective = "energy"
    if isinstance(objective, str):
        if objective not in SEPARABLE:
            raise ValueError(f"unknown separable objective {objective!r}; choose one of {', '.join(SEPARABLE)}")
        objective = SEPARABLE[objective](problem)
    if not isinstance(objective, Separable):
        raise ValueError(f"this method needs a separable objective (per-group curves), not {type(objective).__name__}")
    objective.validate(problem)
    return objective


@dataclass
class Differentiable:
    """``fn(masks) -> (loss, grads)``: masks and grads are dicts group name -> vector.

    ``masks`` names one group per layer (the chosen alternative); a layer left dense gets
    all ones. The gradient of every given mask must come back, of the same shape.

    ``trial_fn(masks) -> (loss, gradient)``, where given, returns the gradient as a function
    to call only if it is wanted: a line search rejects some steps, and a network's backward
    pass is about two thirds of its forward-and-backward (on SmolLM2 at 60%, 18 of COBLA's 49
    evaluations were steps the line search rejected).
    """

    fn: Callable
    name: str = "network loss"
    trial_fn: Callable | None = None

    def __call__(self, masks: Mapping[str, np.ndarray]):
        value, gradient = self.trial(masks)
        return value, gradient()

    def trial(self, masks: Mapping[str, np.ndarray]) -> tuple[float, Callable[[], dict]]:
        """(loss, a function giving its checked gradients): the gradient only when asked."""
        if self.trial_fn is not None:
            value, gradient = self.trial_fn(masks)
        else:
            value, grads = self.fn(masks)
            gradient = lambda: grads  # noqa: E731
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"objective {self.name!r} returned a non-finite loss ({value})")
        return value, lambda: self._checked(masks, gradient())

    def restated(self, to_masks: Callable, to_grads: Callable) -> "Differentiable":
        """The same loss over other masks: ``to_masks(masks)`` gives this objective's masks and
        ``to_grads(masks, grads)`` its gradient back over them (rank multiples, floors); the
        gradient stays lazy."""
        def trial(masks):
            value, gradient = self.trial(to_masks(masks))
            return value, lambda: to_grads(masks, gradient())

        def fn(masks):
            value, gradient = trial(masks)
            return value, gradient()

        return Differentiable(fn, self.name, trial)

    def _checked(self, masks: Mapping[str, np.ndarray], grads: Mapping) -> dict:
        out = {}
        for key, m in masks.items():
            if key not in grads:
                raise ValueError(f"objective {self.name!r} returned no gradient for {key!r}")
            g = np.asarray(grads[key], dtype=np.float64)
            if g.shape != np.shape(m):
                raise ValueError(f"objective {self.name!r}: gradient for {key!r} has shape {g.shape}, mask has {np.shape(m)}")
            if not np.all(np.isfinite(g)):
                raise ValueError(f"objective {self.name!r} returned NaN or infinite gradients for {key!r}")
            out[key] = g
        return out
