"""The house rules the layout promises (docs/design.md):

- rooms stand on floors and import only rooms on lower floors (no arrow runs back up), no
  file imports itself round a circle, and no private name crosses a module boundary;
- solvers/ stays free of torch and of lowrank;
- the registries are what callers consult: a new counted or measured resource, a method, a
  need's provider, a scheme is one file, and "latency" is spelled only in its own module.
"""
import ast
import math
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch import nn

import lowrank
import solvers
from lowrank import Budget, LayerTable, kinds, needs, resources
from lowrank.cli import build_parser
from lowrank.resources import Check
from lowrank.resources.measured import MeasuredResource

from helpers import additive_cost

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A room (a package folder, or a module outside one) may import rooms on lower
# floors only: never a room on its own floor or above. docs/design.md shows the same.
FLOORS = [
    ["solvers", "lowrank.solvers_by_location"],
    ["lowrank.util", "lowrank.version"],
    ["lowrank.kinds", "lowrank.timing", "lowrank.data", "lowrank.export", "lowrank.recalibrate"],
    ["lowrank.layers", "lowrank.zoo", "lowrank.finetuning"],
    ["lowrank.resources"],
    ["lowrank.budget", "lowrank.factorise", "lowrank.saved"],
    ["lowrank.planning"],
    ["lowrank.needs"],
    ["lowrank.compress"],
    ["lowrank.experiment"],
    ["lowrank.report"],
    ["lowrank.cli"],
    ["lowrank", "lowrank.__main__"],
    ["bench"],
]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("lowrank", "solvers", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _room(module: str) -> str:
    if module.split(".")[:2] == ["lowrank", "solvers"]:  # installed by lowrank/solvers_by_location.py
        return "lowrank.solvers_by_location"
    if module.split(".")[0] in ("solvers", "bench"):
        return module.split(".")[0]
    parts = module.split(".")
    return "lowrank" if len(parts) == 1 else ".".join(parts[:2])


def _imports(module: str, path: Path, bound: bool = False):
    """(imported module, imported name or None, line) for every import; with ``bound``, also
    the name the import binds in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if module.startswith("bench"):  # bench scripts import their sibling helper as a top-level module
        package = "bench"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = alias.name, None, node.lineno
                yield (*found, alias.asname or alias.name.split(".")[0]) if bound else found
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
                if module.startswith("bench") and f"bench.{target}" in MODULES:
                    target = f"bench.{target}"
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES or f"{target}.{alias.name}" == "lowrank.solvers":  # `from . import kinds`
                    found = f"{target}.{alias.name}", None, node.lineno
                else:
                    found = target, alias.name, node.lineno
                yield (*found, alias.asname or alias.name) if bound else found


def _ours(module: str) -> bool:
    return module.split(".")[0] in ("lowrank", "solvers", "bench")


def test_every_room_has_a_floor():
    rooms = {_room(m) for m in MODULES}
    assert rooms == set(FLOOR), f"rooms without a floor: {rooms - set(FLOOR)}; floors without a room: {set(FLOOR) - rooms}"


def test_no_arrow_runs_back_up():
    bad = []
    for module, path in MODULES.items():
        here = _room(module)
        for target, _, line in _imports(module, path):
            if not _ours(target):
                continue
            there = _room(target)
            if there != here and FLOOR[there] >= FLOOR[here]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({there}, floor {FLOOR[there]} >= {FLOOR[here]})")
    assert not bad, "\n".join(bad)


def test_no_file_imports_itself_round_a_circle():
    g = nx.DiGraph()
    for module, path in MODULES.items():
        for target, _, _ in _imports(module, path):
            if target in MODULES and target != module:
                g.add_edge(module, target)
    circles = list(nx.simple_cycles(g))
    assert not circles, circles


def test_lowrank_reaches_its_solvers_only_through_its_handle():
    """``import solvers`` would find a user's own solvers.py first (see lowrank/solvers_by_location.py)."""
    bad = [f"{path.relative_to(ROOT)}:{line}" for module, path in MODULES.items() if module.startswith("lowrank")
           for target, _, line in _imports(module, path) if target.split(".")[0] == "solvers"]
    assert not bad, bad


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_name_crosses_a_module():
    """Neither imported (``from x import _y``) nor reached through an imported module (``x._y``)."""
    bad = []
    for module, path in MODULES.items():
        ours = set()  # names this file binds to our modules
        for target, name, line, local in _imports(module, path, bound=True):
            if not _ours(target):
                continue
            if any(_private(p) for p in [*target.split("."), name or ""]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} {name or ''}")
            if name is None or f"{target}.{name}" in MODULES:
                ours.add(local)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) and node.value.id in ours:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} reaches {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def _literals(value: str) -> list[str]:
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == value:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_latency_is_spelled_only_in_its_own_resource_module():
    places = _literals("latency")
    assert places and {p.split(":")[0] for p in places} == {"lowrank/resources/latency.py"}, places


def test_the_default_scheme_is_one_constant():
    """Spelled where schemes are defined (each names itself), nowhere else in the library."""
    elsewhere = [p for p in _literals(kinds.DEFAULT_SCHEME) if not p.startswith(("lowrank/kinds/", "bench/"))]
    assert not elsewhere, elsewhere


def test_importing_solvers_imports_neither_torch_nor_lowrank():
    code = "import sys, solvers; bad = [m for m in ('torch', 'lowrank') if m in sys.modules]; print(','.join(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"solvers imported {out.stdout.strip()}"


def test_every_method_that_needs_data_has_a_provider():
    for name in solvers.methods():
        need = solvers.method(name).needs
        assert isinstance(need, solvers.Need)
        assert (needs.provider(need) is not None) == need.uses_data, name
    assert {m for m in solvers.methods() if solvers.method(m).uses_data} >= {"cobla", "sensitivity"}
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        solvers.method("nope")


def test_budget_is_a_mapping_over_registered_resources():
    b = Budget(macs=0.5, params_abs=1000)
    assert dict(b) == {"macs": 0.5, "params": 1000} and b.macs == 0.5 and b.params is None and b.params_abs == 1000
    assert Budget({"macs": 0.5}) == Budget(macs=0.5, params=None)
    assert b.limits({"macs": 200, "params": 5000}) == {"macs": 100.0, "params": 1000.0}
    assert Budget(macs=0.5).limits({"macs": 200, "params": 5000})["params"] == float("inf")
    with pytest.raises(ValueError, match="unknown resource 'flops'.*macs, params"):
        Budget(flops=0.5)
    with pytest.raises(ValueError, match="give at least one"):
        Budget(macs=None)


class _Weights(resources.Resource):
    """A counted resource for the test: weight-matrix elements only (no biases, no norms)."""

    name, label, axis = "test_weights", "weights", "weight budget"

    def count(self, model, example_input):
        return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))

    def dense_cost(self, layer):
        return layer.module.weight.numel() if isinstance(layer.module, (nn.Linear, nn.Conv2d)) else 0

    def rank_cost(self, layer, scheme):
        return scheme.params_per_rank(layer.weight_shape), 0


def test_a_counted_resource_is_one_class(monkeypatch):
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10)).eval()
    x = torch.randn(8, 20)
    with resources.registered(_Weights()) as weights:
        result = lowrank.compress(model, x, Budget(test_weights=0.4), method="exact")
        assert result.allocation.problem.resources == ("macs", "params", "test_weights")
        assert result.plan.totals_before["test_weights"] == 20 * 30 + 30 * 10
        kept = weights.count(result.model, x)  # counted on the rebuilt model, not planned
        assert kept == result.plan.totals_after["test_weights"] <= 0.4 * 900
        assert result.test_weights.held and result.test_weights.rebuilt == kept  # and checked by compress itself
        assert "weights before" in result.plan.table()
        assert build_parser().parse_args(["compress", "--model", "m", "--test_weights", "0.4"]).test_weights == 0.4  # a CLI flag
        # an expensive resource is priced only when a budget names it
        monkeypatch.setattr(weights, "cheap", False)
        assert resources.priced() == ("macs", "params")
        assert resources.priced(["test_weights"]) == ("macs", "params", "test_weights")
    assert "test_weights" not in resources.names()


def nanojoules(module: nn.Module, inputs) -> float:
    """A deterministic energy meter for the test: 1 nJ per MAC, 500 nJ per call of a layer
    with weights (a factorised layer pays twice), 50 per other leaf module."""
    return additive_cost(module, inputs, lambda m: 500 if any(True for _ in m.parameters(recurse=False)) else 50)


class Energy(MeasuredResource):
    """A measured resource in one class: read off a meter (here a callable), nothing else."""

    name, label, unit, axis = "energy", "energy", "nJ", "energy budget"

    def __init__(self, meter, first_check_over: float = 1.0):
        super().__init__()
        self.meter, self.over, self.reads, self.compares = meter, first_check_over, 0, 0

    @staticmethod
    def _inputs(layer):
        return [torch.randn(*shape) for shape, _, _ in layer.calls]

    def measure_together(self, model, example_input, layers, settings):
        self.reads += 1
        return self.meter(model, [example_input]), [self.meter(l.module, self._inputs(l)) for l in layers]

    def measure_factorised(self, layer, scheme, ranks, settings):
        rows, cols = scheme.matrix_shape(layer.weight_shape)
        inputs = self._inputs(layer)
        costs = [self.meter(scheme.factorized(layer.module, r, (torch.randn(rows, r), torch.ones(r), torch.randn(r, cols))), inputs)
                 for r in ranks]
        return self.meter(layer.module, inputs), costs

    def compare(self, original, rebuilt, example_input, settings):
        self.compares += 1  # the first reading is the cheapest plan's (the ceiling); the first planned model reads heavier
        over = self.over if self.compares == 2 else 1.0
        return Check(self.name, self.meter(original, [example_input]), over * self.meter(rebuilt, [example_input]), math.nan)


def test_a_measured_resource_is_one_class():
    torch.manual_seed(0)
    model = lowrank.zoo.LeNet5().eval()
    x = torch.randn(16, 1, 28, 28)
    with resources.registered(Energy(nanojoules, first_check_over=1.3)) as energy:
        assert "energy" in resources.names() and not energy.cheap
        result = lowrank.compress(model, x, Budget(energy=0.6), method="exact", scheme="auto", basis="weight")
        original, rebuilt = nanojoules(model, [x[:1]]), nanojoules(result.model, [x[:1]])
        assert result.energy.held and rebuilt <= 0.6 * original + 1e-6
        assert result.plan.info["attempts"] == 2 and result.plan.info["plan_fractions"]["energy"] < 0.8  # planned again, for less
        assert result.plan.limits["energy"] == pytest.approx(0.6 * original)  # the user's limit stays the limit
        assert "energy nJ before" in result.plan.table()
        # the meter's additive readings make the plan's prediction exact at read ranks (safe side between them)
        assert rebuilt <= result.energy.planned + 1e-6
        reads = energy.reads
        LayerTable(model, x[:1]).prices("energy")
        assert energy.reads == reads + 1  # layer tables come from memory; only the total is read again, on one meter
        assert build_parser().parse_args(["compress", "--model", "m", "--energy", "0.6"]).energy == 0.6  # a CLI flag


def test_layer_schemes_are_looked_up_not_branched_on():
    conv, depthwise, linear = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Linear(4, 5)
    assert list(kinds.schemes_for(conv)) == ["channel", "spatial", "input", "prune"]
    assert list(kinds.schemes_for(linear)) == [kinds.DEFAULT_SCHEME]
    assert kinds.schemes_for(depthwise) == {}
    assert kinds.scheme_names() == ("channel", "spatial", "input", "prune")
    for scheme in kinds.schemes_for(conv).values():  # weight -> matrix -> weight is the identity
        assert torch.equal(scheme.weight(scheme.matrix(conv.weight), conv.weight.shape), conv.weight)
    table = LayerTable(nn.Sequential(conv, nn.ReLU(), depthwise), torch.randn(1, 3, 12, 12))
    assert [l.name for l in table.compressible] == ["0"]
    assert "prune" not in table.layers["0"].schemes and "model's input" in table.layers["0"].unprunable
    assert "depthwise" in table.layers["2"].reason




def test_no_function_runs_over_60_lines():
    """Long work reads as named steps (COBLA's QP: the dual, one binding budget, projected
    Newton, its direction and line search), each a function of at most 60 lines, docstring in."""
    long = []
    for module, path in MODULES.items():
        if module.split(".")[0] not in ("lowrank", "solvers"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_the_counted_resources_names_are_spelled_once():
    """"macs" and "params" are spelled where solvers defines them; lowrank's resources and
    every default budget take them from there."""
    places = {p.split(":")[0] for name in (solvers.MACS, solvers.PARAMS) for p in _literals(name) if not p.startswith("bench/")}
    assert places == {"solvers/problem.py"}, places
