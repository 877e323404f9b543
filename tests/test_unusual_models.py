"""Unusual models and everyday inputs: parametrized layers (weight_norm, spectral_norm),
data-dependent paths, a DataLoader of a TensorDataset, empty calibration tensors, TorchScript,
and a property test over random small models and budgets: every outcome either holds by an
independent count or is refused in lowrank's words."""
import io
import random
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations
from torch.utils.data import DataLoader, TensorDataset

import lowrank
from lowrank import Budget, LayerTable, UnseenPathWarning
from lowrank.util.batches import as_batches

from helpers import counted_macs, n_params


def snapshot(model) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def mlp_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _hook_weight_norm(m):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates it; users still have models made with it
        return torch.nn.utils.weight_norm(m)


PARAMETRIZATIONS = {
    "weight_norm": parametrizations.weight_norm,
    "spectral_norm": parametrizations.spectral_norm,
    "hook_weight_norm": _hook_weight_norm,
    "hook_spectral_norm": torch.nn.utils.spectral_norm,
}


def parametrized_mlp(kind: str, seed=0):
    torch.manual_seed(seed)
    wrap = PARAMETRIZATIONS[kind]
    return nn.Sequential(wrap(nn.Linear(32, 64)), nn.ReLU(), wrap(nn.Linear(64, 48, bias=False)), nn.ReLU(),
                         nn.Linear(48, 10))


# --- 1, 2: parametrized layers -------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(PARAMETRIZATIONS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compress_leaves_a_parametrized_model_unchanged_bit_for_bit(kind, mode):
    model = parametrized_mlp(kind).train(mode == "train")
    before = snapshot(model)  # spectral_norm's _u and _v buffers included
    cls = type(model[0])
    calib = mlp_data()
    for method in ("exact", "cobla"):
        lowrank.compress(model, calib, Budget(macs=0.5), method=method)
        lowrank.LayerTable(model, calib[0][:1])
    assert snapshot(model) == before
    assert type(model[0]) is cls and model[0].weight.shape == (64, 32)  # the user's layer keeps its parametrization
    assert model.training == (mode == "train")


@pytest.mark.parametrize("kind", sorted(PARAMETRIZATIONS))
def test_parametrized_layers_are_factorised_from_their_effective_weight(kind):
    model = parametrized_mlp(kind).eval()
    x, y = mlp_data()
    table = LayerTable(model, x[:1])
    assert [l.name for l in table.compressible] == ["0", "2", "4"]  # the bias-free one too; no ParametrizationList rows
    assert "parametrization folded" in table.summary() and "tied" not in table.summary()
    with torch.no_grad():
        expected = model(x)
        full = lowrank.rebuild(model, {"0": 32, "2": 48}, table=table)
        assert torch.allclose(full(x), expected, atol=1e-4)  # full rank: the effective weight, exactly
    original_macs, original_params = counted_macs(model, x[:1]), n_params(table.model)
    for macs in (0.5, 0.99):  # 0.5 was called infeasible; 0.99 ended in an AssertionError
        result = lowrank.compress(model, (x, y), Budget(macs=macs, params=macs), method="exact")
        assert result.held
        assert counted_macs(result.model, x[:1]) <= macs * original_macs
        assert n_params(result.model) <= macs * original_params


def test_tie_detection_compares_storage_not_ids_of_temporaries():
    for _ in range(5):  # ids of temporaries are reused at random: the old report varied from run to run
        model = parametrized_mlp("spectral_norm").train()
        table = LayerTable(model, torch.randn(1, 32))
        assert all(not l.reason for l in table.layers.values()), table.summary()
    shared = nn.Linear(8, 8)
    tied = nn.Sequential(shared, nn.ReLU(), nn.Linear(8, 8))
    tied[2].weight = shared.weight  # a real tie
    reasons = {l.name: l.reason for l in LayerTable(tied, torch.randn(1, 8)).layers.values()}
    assert "weight tied to '2'" in reasons["0"] and "weight tied to '0'" in reasons["2"]


# --- 3: paths that depend on the input -----------------------------------------------------------
class Branchy(nn.Module):
    """Takes ``a`` or ``b`` by the sign of its input's mean."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.head = nn.Linear(32, 64), nn.Linear(32, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.a(x) if x.mean() > 0 else self.b(x)))


def test_a_branch_the_calibration_never_takes_is_named_in_a_warning():
    x, y = mlp_data()
    with pytest.warns(UnseenPathWarning, match=r"'b' never ran on the calibration data.*cover only the paths"):
        result = lowrank.compress(Branchy(), (x.abs(), y), Budget(macs=0.5), method="exact")
    assert result.not_priced == ["b"] and result.plan.info["not_priced"] == "b"
    assert "covers only the paths the example input took: b" in result.plan.table()
    assert "not used on the example input" in result.table.layers["b"].reason


def test_a_branch_only_later_batches_take_is_named_as_such():
    x, y = mlp_data()
    calib = [(x[:32].abs(), y[:32]), (-x[32:].abs(), y[32:])]  # the second batch takes b
    with pytest.warns(UnseenPathWarning, match=r"'b' ran on the calibration data but not on its first sample"):
        result = lowrank.compress(Branchy(), calib, Budget(macs=0.5), method="exact")
    assert result.not_priced == ["b"]


def test_a_weight_used_functionally_is_no_unseen_path():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    net = nn.ModuleDict({"pre": model, "mha": mha})

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            h = self.net["pre"](x)
            return self.net["mha"](h, h, h, need_weights=False)[0].mean(1)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenPathWarning)
        result = lowrank.compress(Net().eval(), torch.randn(8, 5, 16), Budget(params=0.9), method="exact")
    assert result.not_priced == []


# --- 4, 5: the everyday calibration forms ----------------------------------------------------------
def test_a_dataloader_of_a_tensordataset_is_inputs_and_targets():
    x, y = mlp_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    batches = as_batches(loader)
    assert len(batches) == 4 and all(torch.equal(b[1], y[i * 16:(i + 1) * 16]) for i, b in enumerate(batches))
    assert all(b[0].shape == (16, 32) for b in batches)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    result = lowrank.compress(model, loader, Budget(macs=0.5), method="cobla")
    assert result.held
    only_inputs = as_batches(DataLoader(TensorDataset(x), batch_size=32))  # a dataset of inputs alone
    assert len(only_inputs) == 2 and only_inputs[0][1] is None


@pytest.mark.parametrize("calib", [torch.zeros(0, 32), (torch.zeros(0, 32), torch.zeros(0, dtype=torch.long)),
                                   [torch.zeros(0, 32), torch.zeros(0, 32)], DataLoader(TensorDataset(torch.zeros(0, 32)))])
def test_calibration_without_samples_is_refused_in_one_clear_line(calib):
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    for method in ("exact", "cobla"):
        with pytest.raises(ValueError, match="calib is empty"):
            lowrank.compress(model, calib, Budget(macs=0.5), method=method)


def test_an_empty_batch_beside_real_ones_holds_nothing_and_is_left_out():
    x, y = mlp_data()
    batches = as_batches([(torch.zeros(0, 32), torch.zeros(0, dtype=torch.long)), (x, y)])
    assert len(batches) == 1 and batches[0][0] is x


# --- 6: TorchScript --------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_model_is_refused_in_lowranks_words(how):
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    x = torch.randn(8, 32)
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    with pytest.raises(TypeError, match=r"TorchScript.*Compress that nn.Module, then script"):
        lowrank.compress(scripted, x, Budget(macs=0.5), method="exact")
    with pytest.raises(TypeError, match="TorchScript"):
        LayerTable(scripted, x[:1])


# --- the zoo: never touched ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compress_leaves_every_zoo_architecture_unchanged_bit_for_bit(arch, mode):
    from conftest import make

    model = make(arch).train(mode == "train")
    flags = {n: m.training for n, m in model.named_modules()}
    before = snapshot(model)
    torch.manual_seed(0)
    calib = (torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    for method in ("exact", "cobla"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lowrank.SeveredModelWarning)
            lowrank.compress(model, calib, Budget(macs=0.5), method=method, scheme="auto")
    assert snapshot(model) == before and {n: m.training for n, m in model.named_modules()} == flags


# --- the property: random small models under random budgets -------------------------------------------
LOWRANK_ERRORS = (ValueError, TypeError)  # what compress raises for what a user asked (InfeasibleBudgetError is one)


class Random(nn.Module):
    """A small random network from the layer kinds lowrank factorises: conv stages (some with
    a parallel branch summed in, some with a layer called twice), then linear layers, any of
    them weight- or spectral-normed."""

    def __init__(self, rng: random.Random, parametrized: float = 0.3):
        super().__init__()
        wrap = lambda m: PARAMETRIZATIONS[rng.choice(sorted(PARAMETRIZATIONS))](m) if rng.random() < parametrized else m  # noqa: E731
        c, self.stages = 3, nn.ModuleList()
        self.kinds = []
        for _ in range(rng.randint(1, 3)):
            out = rng.choice([4, 8, 16])
            stage = nn.ModuleDict({"main": wrap(nn.Conv2d(c, out, rng.choice([1, 3]), padding="same", bias=rng.random() < 0.5))})
            kind = rng.choice(["plain", "branch", "shared"])
            if kind == "branch":
                stage["side"] = wrap(nn.Conv2d(c, out, 1))
            if kind == "shared":
                stage["again"] = wrap(nn.Conv2d(out, out, 3, padding=1))
            self.stages.append(stage)
            self.kinds.append(kind)
            c = out
        self.seq = nn.Conv1d(c, c, 3, padding=1) if rng.random() < 0.5 else None
        widths = [c] + [rng.choice([8, 16, 32]) for _ in range(rng.randint(0, 2))] + [10]
        self.head = nn.ModuleList(wrap(nn.Linear(a, b)) for a, b in zip(widths, widths[1:]))

    def forward(self, x):
        for stage, kind in zip(self.stages, self.kinds):
            h = torch.relu(stage["main"](x))
            if kind == "branch":
                h = h + stage["side"](x)
            if kind == "shared":
                h = torch.relu(stage["again"](stage["again"](h)))
            x = h
        if self.seq is not None:
            x = self.seq(x.flatten(2)).unflatten(2, x.shape[2:])
        x = x.mean((2, 3))
        for i, layer in enumerate(self.head):
            x = layer(x) if i == len(self.head) - 1 else torch.relu(layer(x))
        return x


@pytest.mark.parametrize("seed", range(64))
def test_random_models_under_random_budgets_hold_or_are_refused_clearly(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = Random(rng).train(rng.random() < 0.5)
    x, y = torch.randn(24, 3, 8, 8), torch.randint(0, 10, (24,))
    before = snapshot(model)
    kwargs = {rng.choice(["macs", "params"]): rng.choice([0.05, 0.2, 0.4, 0.6, 0.8, 0.99])}
    if rng.random() < 0.4:
        kwargs["params" if "macs" in kwargs else "macs"] = rng.choice([0.3, 0.5, 0.9])
    budget = Budget(**kwargs)
    method = rng.choice(["exact", "uniform", "energy", "cobla"])
    scheme = rng.choice(["channel", "spatial", "auto"])
    calib = rng.choice([(x, y), [(x[:12], y[:12]), (x[12:], y[12:])], DataLoader(TensorDataset(x, y), batch_size=8)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lowrank.SeveredModelWarning)
            result = lowrank.compress(model, calib, budget, method=method, scheme=scheme)
    except LOWRANK_ERRORS as err:  # anything else (AssertionError, IndexError, KeyError, RuntimeError) fails the test
        assert "smallest achievable" in str(err), err  # the only refusal a valid model and valid data may meet
    else:
        assert result.held
        plain = LayerTable(model, x[:1]).model  # the effective weights, as counted
        if "macs" in kwargs:
            assert counted_macs(result.model, x[:1]) <= kwargs["macs"] * counted_macs(plain, x[:1])
        if "params" in kwargs:
            assert n_params(result.model) <= kwargs["params"] * n_params(plain)
    assert snapshot(model) == before


@pytest.mark.parametrize("seed", range(6))
def test_random_models_on_the_command_line_end_in_a_result_or_one_line(seed, tmp_path, capsys):
    from lowrank.cli import main

    rng = random.Random(100 + seed)
    torch.manual_seed(seed)
    torch.save(Random(rng, parametrized=0).eval(), tmp_path / "model.pt")  # torch pickles no parametrized module whole
    torch.save((torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))), tmp_path / "calib.pt")
    budget = [f"--{rng.choice(['macs', 'params'])}", str(rng.choice([0.01, 0.3, 0.7]))]
    rc = main(["compress", "--model", str(tmp_path / "model.pt"), "--calib", str(tmp_path / "calib.pt"), *budget,
               "--method", rng.choice(["exact", "cobla"]), "--scheme", rng.choice(["channel", "auto"]),
               "--out", str(tmp_path / "small.pt"), "--quiet", "--keep-severed"])
    err = capsys.readouterr().err
    assert rc in (0, 2) and "Traceback" not in err
    if rc == 2:
        assert [line for line in err.splitlines() if line.startswith("lowrank: error: ")] and "smallest achievable" in err
    else:
        assert isinstance(torch.load(tmp_path / "small.pt", weights_only=False), nn.Module)
