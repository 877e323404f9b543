"""The budget guarantee at scale: 1,000 random (architecture, budget, method, scheme) trials
over every compressible layer kind, and around recurrent and attention layers (whose fused
kernels torch's counter cannot see), each counted independently on the rebuilt model
(FlopCounterMode MACs with those layers by a hand formula, numel parameters). Every trial either fits or is refused as an
infeasible budget whose message names the smallest achievable cost, and a refusal is
checked to be right: the cheapest model (every layer at rank 0) is over the budget.

Set LOWRANK_BUDGET_TRIALS (e.g. 10000) for a longer draw; the default is fixed and seeded."""
import os
import re

import numpy as np
import torch
from torch import nn

import lowrank
from lowrank import Budget, InfeasibleBudgetError, LayerTable, rebuild

from helpers import counted_macs, n_params
from test_user_models import Conv1D

TRIALS = int(os.environ.get("LOWRANK_BUDGET_TRIALS", "1000"))
METHODS = ["uniform", "energy", "alds", "zhang", "svdllm", "svdllm2", "exact"]  # the data-free ones: fast enough for thousands


def _arches():
    """(name, model, one example input): each compressible kind, plus layers that stay dense."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
    cnn = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 12, 3, groups=12),
                        nn.Conv2d(12, 20, (3, 5), stride=(2, 1), padding=(1, 2)), nn.ReLU(), nn.Conv2d(20, 16, 1),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    conv1d = nn.Sequential(nn.Conv1d(8, 24, 5, padding=2), nn.ReLU(), nn.Conv1d(24, 24, 3, stride=2), nn.ReLU(),
                           nn.Conv1d(24, 24, 3, groups=4), nn.Flatten(), nn.LazyLinear(10))
    hf = nn.Sequential(Conv1D(64, 32), nn.GELU(), Conv1D(32, 64), nn.LayerNorm(32), nn.Linear(32, 8))
    x_conv1d = torch.randn(1, 8, 40)
    conv1d(x_conv1d)  # materialise the lazy layer
    chain = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1),
                          nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(24, 8, 1), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))  # three prunable convs in a chain
    return [("mlp", mlp.eval(), torch.randn(1, 8, 8)), ("cnn", cnn.eval(), torch.randn(1, 3, 16, 16)),
            ("chain", chain.eval(), torch.randn(1, 3, 16, 16)),
            ("conv1d", conv1d.eval(), x_conv1d), ("hf-conv1d", hf.eval(), torch.randn(1, 6, 32)),
            ("recurrent", Recurrent().eval(), torch.randn(1, 12, 16)), ("attention", Attention().eval(), torch.randn(1, 10, 24))]


class Recurrent(nn.Module):
    """Linear layers around an LSTM: most of the work is the LSTM's, which stays dense."""

    def __init__(self):
        super().__init__()
        self.embed, self.lstm, self.head = nn.Linear(16, 32), nn.LSTM(32, 48, batch_first=True), nn.Linear(48, 10)

    def forward(self, x):
        out, _ = self.lstm(torch.relu(self.embed(x)))
        return self.head(out[:, -1])


class Attention(nn.Module):
    """Linear layers around self-attention (its fused fast path in eval mode)."""

    def __init__(self):
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(24, 32), nn.MultiheadAttention(32, 4, batch_first=True), nn.Linear(32, 10)

    def forward(self, x):
        h = self.embed(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(a.mean(1))


def _random_budget(rng) -> Budget:
    kind = rng.integers(3)
    frac = lambda: float(rng.choice([rng.uniform(0.01, 0.3), rng.uniform(0.3, 1.0)]))  # noqa: E731
    if kind == 0:
        return Budget(macs=frac())
    if kind == 1:
        return Budget(params=frac())
    return Budget(macs=frac(), params=frac())


def test_a_thousand_random_trials_never_exceed_a_budget():
    rng = np.random.default_rng(0)
    arches = [(name, model, x, LayerTable(model, x)) for name, model, x in _arches()]
    counts = {"fits": 0, "refused": 0}
    kinds_seen, schemes_seen = set(), set()
    for trial in range(TRIALS):
        name, model, x, table = arches[rng.integers(len(arches))]
        budget, method = _random_budget(rng), METHODS[rng.integers(len(METHODS))]
        scheme = str(rng.choice(["channel", "spatial", "auto"] + (["prune"] if name in ("cnn", "chain") else [])))
        limits = budget.limits(table.totals)
        label = f"trial {trial}: {name} {budget} {method} {scheme}"
        try:
            result = lowrank.compress(model, x, budget, method=method, scheme=scheme, table=table)
        except InfeasibleBudgetError as err:
            counts["refused"] += 1
            assert re.search(r"is below the smallest achievable [\d.]+% \(", str(err)), label
            cheapest = _cheapest(model, table, scheme)  # rank 0 everywhere, cheapest scheme: still over some limit
            assert any(cheapest[r] > limits[r] for r in limits), f"{label}: refused, yet rank 0 fits: {cheapest}"
            continue
        macs, params = counted_macs(result.model, x), n_params(result.model)
        assert macs <= limits["macs"] and params <= limits["params"], f"{label}: {macs} MACs, {params} params > {limits}"
        assert (macs, params) == (result.plan.totals_after["macs"], result.plan.totals_after["params"]), label
        counts["fits"] += 1
        kinds_seen |= {r.kind for r in result.plan.rows if not r.dense}
        schemes_seen |= {r.scheme for r in result.plan.rows if not r.dense}
    print(f"{TRIALS} trials: {counts}, factorised kinds seen: {sorted(kinds_seen)}")
    assert counts["fits"] + counts["refused"] == TRIALS
    assert counts["fits"] > TRIALS // 2 and counts["refused"] > 0, counts  # both paths exercised
    assert kinds_seen == {"linear", "conv2d", "conv1d", "hf_conv1d"} and "prune" in schemes_seen
    assert arches[-2][3].total_macs == counted_macs(arches[-2][1], arches[-2][2]) > 12 * 4 * 48 * (32 + 48)  # the LSTM counted


def _cheapest(model, table, scheme: str) -> dict:
    """Independent count of the smallest model lowrank could build: every layer at rank 0, in
    whichever scheme is cheaper for it (per resource, the minimum over schemes); under
    ``prune``, the prunable layers at 0 and the others dense."""
    out = {}
    for res in ("macs", "params"):
        schemes = {}
        layers = [l for l in table.compressible if scheme != "prune" or "prune" in l.schemes]
        for layer in layers:
            costs = {s: price.fixed for s, price in table.prices(res).layers[layer.name].schemes.items()}
            schemes[layer.name] = "prune" if scheme == "prune" else min(costs, key=costs.get)
        small = rebuild(model, {l.name: 0 for l in layers}, schemes, table=table)
        x = table.example_input
        out[res] = counted_macs(small, x) if res == "macs" else n_params(small)
    return out
