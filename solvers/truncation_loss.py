"""SVD-LLM's and SVD-LLM V2's allocations: the same share of parameters kept in every matrix,
and V2's refinement, where a matrix keeps more where truncating it loses more.

Wang et al., *SVD-LLM V2* (arXiv:2503.12340), section "Heterogeneous compression ratio
allocation" (its Figure 2 and the ratio equation). The weight matrices are grouped by type
(every layer's q_proj is one group, every layer's down_proj another, ...). At the target
ratio R each matrix's theoretical truncation loss L_min = ||W X - W' X||_F is computed, and
matrix i of group G gets the ratio

    R_i = len(G) * R * L_min,i / sum(L_min over G),

so the group's mean ratio stays R. R here is the share of a matrix's parameters kept, as the
``ratio`` of the SVD-LLM code: a rank of R * m * n / (m + n) for an m x n matrix.

In lowrank's data-aware basis (the default for language models) a group's singular values are
those of W S with S S^T = X X^T, so the loss at rank r is the norm of the values past r:
V2's L_min exactly. In the weight basis it is the plain weight truncation error.

The paper fixes R from the compression target; here R is the largest value whose plan meets
every budget (found by a scan, as the loss-weighted ranks need not grow monotonically in R).
A matrix whose share R_i passes 1 is capped at full rank; what it cannot take is not moved to
others (the paper states no rule for it).
"""
from __future__ import annotations

import re

import numpy as np

from .baselines import largest_feasible, preferred_active, size_resource
from .objectives import discarded_energy
from .problem import Allocation, Problem
from .registry import register

# Candidate target ratios; a rank at ratio R is R * m * n / (m + n), so every matrix is at
# full rank before R = 2 (m + n <= 2 max(m, n)).
_RATIOS = np.linspace(0.0, 2.0, 4001)


def matrix_type(name: str) -> str:
    """A layer's type: its name with the block numbers left out (``model.layers.3.mlp.up_proj``
    -> ``model.layers.*.mlp.up_proj``), so the same matrix of every block falls in one group."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name)


@register("svdllm")
def svdllm(problem: Problem) -> Allocation:
    """SVD-LLM's rule (Wang et al., arXiv:2403.07378): every matrix keeps the same share R of
    its parameters, a rank of R * m * n / (m + n); R the largest that fits every budget.
    (``uniform`` keeps the same share of every layer's rank instead.)"""
    return _ratio_rule(problem, "svdllm", by_loss=False)


@register("svdllm2")
def svdllm2(problem: Problem) -> Allocation:
    """SVD-LLM V2's rule: within each matrix type, ratios in proportion to the truncation loss
    at the common ratio; the common ratio the largest that fits every budget."""
    return _ratio_rule(problem, "svdllm2", by_loss=True)


def _ratio_rule(problem: Problem, name: str, by_loss: bool) -> Allocation:
    active = preferred_active(problem)
    size = size_resource(problem)
    chosen = np.flatnonzero(active)
    groups = [problem.groups[i] for i in chosen]
    full = np.array([g.full_rank for g in groups], dtype=np.int64)
    # ranks per unit of ratio: m * n / (m + n) for a matrix (dense size over size per rank)
    per_ratio = np.array([g.dense_cost[size] / g.rank_cost[size] if g.rank_cost[size] > 0 else g.full_rank
                          for g in groups])
    # per chosen group, padded to the widest: the truncation loss L(r) (the norm of the values
    # past r) and the cost at every rank
    discarded = discarded_energy(problem, normalise=False).curves
    width = int(full.max()) + 1
    tails = np.zeros((len(groups), width))
    costs = np.zeros((len(groups), width, len(problem.resources)))
    for j, g in enumerate(groups):
        tails[j, : g.full_rank + 1] = np.sqrt(discarded[g.name])
        costs[j, : g.full_rank + 1] = g.cost(np.arange(g.full_rank + 1))
    kinds: dict[tuple, int] = {}
    kind = np.array([kinds.setdefault((matrix_type(g.layer), g.option, g.full_rank, float(g.dense_cost[size])), len(kinds))
                     for g in groups])
    of_type = np.eye(len(kinds))[kind]  # group x type, one-hot
    same_type = of_type @ of_type.T  # 1 where two groups share a type
    members = same_type.sum(axis=1)
    rows = np.arange(len(groups))

    def chosen_ranks(ratio) -> np.ndarray:
        """Ranks of the chosen groups at one ratio, or at each of an array of them (one row each)."""
        ratio = np.asarray(ratio, dtype=np.float64)[..., None]
        shares = np.broadcast_to(ratio, ratio.shape[:-1] + (len(groups),))
        if by_loss:
            loss = tails[rows, np.minimum(np.floor(ratio * per_ratio + 1e-9), full).astype(np.int64)]
            total = loss @ same_type  # each group's type's summed loss
            shares = np.where(total > 0, ratio * members * loss / np.where(total > 0, total, 1.0), ratio)
        return np.minimum(np.floor(shares * per_ratio + 1e-9), full).astype(np.int64)

    def ranks_at(ratio: float) -> np.ndarray:
        ranks = np.zeros(len(problem.groups), dtype=np.int64)
        ranks[chosen] = chosen_ranks(ratio)
        return ranks

    spent = problem.base_cost + costs[rows, chosen_ranks(_RATIOS)].sum(axis=1)  # (ratios, resources)
    fitting = _RATIOS[np.all(spent <= problem.budgets, axis=1)].tolist()
    candidates = np.array([0.0] + fitting[-1:])  # the largest ratio that fits (0 when none does)
    ratio, ranks = largest_feasible(problem, candidates, ranks_at, active)
    return Allocation(problem, ranks, name, active=active, info={"ratio": float(ratio), "types": len(kinds)})
