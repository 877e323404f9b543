"""COBLA on a real trained model, and the pieces it stands on."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lowrank
from lowrank import Budget, LayerTable
from lowrank.needs.network_loss import NetworkLoss
from lowrank.util.batches import as_batches, split_calibration
from lowrank.zoo import LeNet5
from solvers import Differentiable, solve
from solvers.cobla import RelaxedBudgets, solve_qp
from solvers.synthetic import from_shapes

BASELINES = ["uniform", "energy", "alds", "zhang", "exact", "sensitivity"]


@pytest.fixture(scope="module")
def trained_lenet():
    """LeNet-5 trained for 6 epochs on scikit-learn's bundled digits (upsampled to 28x28)."""
    datasets = pytest.importorskip("sklearn.datasets")
    torch.manual_seed(0)
    d = datasets.load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, size=28, mode="bilinear", align_corners=False)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, calib, test = perm[:1200], perm[1200:1500], perm[1500:]
    model = LeNet5()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(6):
        for i in range(0, len(train), 64):
            idx = train[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    batches = [(x[calib[i : i + 100]], y[calib[i : i + 100]]) for i in range(0, 300, 100)]
    return model, batches, (x[test], y[test])


@pytest.mark.parametrize("scheme", ["channel", "auto"])
@pytest.mark.parametrize("budget", [Budget(macs=0.3, params=0.3), Budget(macs=0.5), Budget(params=0.15)], ids=str)
def test_cobla_never_loses_to_any_method_on_the_selection_split(trained_lenet, scheme, budget):
    """By construction, not by luck: every other method's allocation is one of COBLA's
    candidates, all scored on the same held-out selection split by (top-1 error, loss) in that
    order, so COBLA's selection score is at most each method's (exactly, on any machine)."""
    model, calib, (x_test, y_test) = trained_lenet
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() > 0.9  # the model really is trained
    grad_batches, select_batches = calib[:2], calib[2:]
    table = LayerTable(model, x_test[:1])
    on_selection = NetworkLoss(table.model, table.bases, table.problem(budget, scheme), as_batches(select_batches), graph=table.graph)
    scores = {}
    for method in BASELINES + ["cobla"]:
        result = lowrank.compress(model, grad_batches, budget, method=method, scheme=scheme, table=table, selection=select_batches)
        assert result.allocation.feasible
        scores[method] = on_selection.score_allocations([(result.allocation.ranks, result.allocation.active)])[0]
        assert scores[method].error is not None and scores[method].samples == 100  # class labels: the error too
    c = scores["cobla"]
    assert all(c.loss <= s.loss or c.error < s.error for s in scores.values()), scores  # no method beats it on both
    info = result.allocation.info
    assert info["scored_by"] == "selection split"
    assert {f"start:{m}" for m in BASELINES} <= set(info["candidates"])
    assert info["candidates"][info["chosen"]]["score"]["loss"] == pytest.approx(c.loss, rel=1e-6)
    if "trace" in info:  # the SQP ran (its start had layers to relax)
        assert info["iterations"] >= 1 and info["trace"][-1] <= info["trace"][0]  # it never increases the relaxed loss
        assert {"floor+fill", "linearised-exact"} <= set(info["candidates"])


def test_calibration_split_is_disjoint():
    xs = [torch.full((4, 1), float(i)) for i in range(8)]
    grad, sel = split_calibration([(x, None) for x in xs])
    assert len(grad) == 6 and len(sel) == 2
    assert not {float(b[0][0]) for b in grad} & {float(b[0][0]) for b in sel}
    (g1,), (s1,) = split_calibration([(torch.arange(10.0)[:, None], torch.arange(10))])
    assert set(g1[1].tolist()) | set(s1[1].tolist()) == set(range(10))
    assert not set(g1[1].tolist()) & set(s1[1].tolist())
    with pytest.raises(ValueError, match="at least 2 calibration samples"):
        split_calibration([(torch.zeros(1, 3), None)])


def test_network_loss_gradient_matches_finite_differences(trained_lenet):
    model, calib, _ = trained_lenet
    table = LayerTable(model, calib[0][0][:1])
    problem = table.problem(Budget(macs=0.5))
    net = NetworkLoss(table.model, table.bases, problem, calib[:1])
    masks = {g.name: np.full(g.full_rank, 0.7) for g in problem.groups}
    value, grads = net(masks)
    name = problem.groups[1].name
    eps = 1e-2  # the model computes in float32: a central difference with a moderate step
    up, down = ({**masks, name: masks[name].copy()} for _ in range(2))
    up[name][0] += eps
    down[name][0] -= eps
    fd = (net.evaluate(up, grad=False)[0] - net.evaluate(down, grad=False)[0]) / (2 * eps)
    assert fd == pytest.approx(grads[name][0], rel=1e-2, abs=1e-5)


def test_qp_subproblem_matches_a_general_qp_solver():
    cp = pytest.importorskip("cvxpy")
    p = from_shapes([(20, 30, 4, 0), (16, 40, 9, 0), (25, 25, 1, 0)], macs=0.3, params=0.35, seed=1)
    b = RelaxedBudgets(p)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, b.C.shape[0]) * 0.3
    g = rng.normal(size=x.size)
    h = rng.uniform(0.5, 3.0, x.size)
    y, mu, _ = solve_qp(x, g, h, b)
    d = cp.Variable(x.size)
    prob = cp.Problem(cp.Minimize(g @ d + 0.5 * cp.sum(cp.multiply(h, cp.square(d)))), [x + d >= 0, x + d <= 1, (x + d) @ b.C <= b.cap])
    prob.solve()
    ours = g @ (y - x) + 0.5 * np.sum(h * (y - x) ** 2)
    assert np.all(y @ b.C <= b.cap + 1e-9) and np.all((y >= 0) & (y <= 1))
    assert ours == pytest.approx(prob.value, rel=1e-5, abs=1e-8)


def test_cobla_errors_are_clear():
    p = from_shapes([(8, 8, 1, 0), (6, 9, 1, 0)], seed=0)
    with pytest.raises(ValueError, match="Differentiable"):
        solve(p, "cobla")

    def nan_loss(masks):
        return float("nan"), {k: np.zeros_like(v) for k, v in masks.items()}

    with pytest.raises(ValueError, match="non-finite"):
        solve(p, "cobla", objective=Differentiable(nan_loss))

    def wrong_shape(masks):
        return 1.0, {k: np.zeros(3) for k in masks}

    with pytest.raises(ValueError, match="shape"):
        solve(p, "cobla", objective=Differentiable(wrong_shape))


def test_a_trial_gives_the_same_loss_and_gradient_as_a_full_evaluation(trained_lenet):
    """NetworkLoss.trial defers the backward pass; what it returns, once asked, is evaluate's."""
    model, calib, _ = trained_lenet
    table = LayerTable(model, calib[0][0][:1])
    problem = table.problem(Budget(macs=0.5))
    net = NetworkLoss(table.model, table.bases, problem, calib[:1])
    masks = {g.name: np.linspace(1.0, 0.2, g.full_rank) for g in problem.groups}
    value, grads = net.evaluate(masks)
    lazy_value, gradient = net.trial(masks)
    assert lazy_value == value
    lazy = gradient()
    assert all(np.array_equal(lazy[n], grads[n]) for n in grads)


def test_cobla_takes_gradients_only_at_the_steps_it_accepts():
    """Rejected line-search steps cost a loss, never a gradient; the plan is the one an
    objective computing every gradient at once gives."""
    p = from_shapes([(20, 30, 4, 0), (16, 40, 9, 0), (25, 25, 1, 0), (12, 18, 1, 0)], macs=0.3, params=0.35, seed=1)
    rng = np.random.default_rng(0)
    targets = {g.name: rng.uniform(0, 1, g.full_rank) for g in p.groups}
    asked = []

    def loss(masks):  # strongly coupled: a diagonal model of its curvature overshoots, and full steps get rejected
        total = sum(float(np.sum(m)) for m in masks.values())
        value = sum(float(np.sum((m - targets[n]) ** 2)) for n, m in masks.items()) + 5 * (total - 10) ** 2
        return value, {n: 2 * (m - targets[n]) + 10 * (total - 10) for n, m in masks.items()}

    def trial(masks):
        value, grads = loss(masks)
        return value, lambda: asked.append(1) or grads

    eager = solve(p, "cobla", objective=Differentiable(loss), max_iter=15)
    lazy = solve(p, "cobla", objective=Differentiable(loss, trial_fn=trial), max_iter=15)
    assert np.array_equal(eager.ranks, lazy.ranks) and eager.info["trace"] == lazy.info["trace"]
    info = lazy.info
    assert len(asked) == info["objective_gradients"] == len(info["trace"])  # the start and each accepted step
    assert info["objective_passes"] > info["objective_gradients"], "no step was rejected: the test would prove nothing"
