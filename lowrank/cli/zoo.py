"""``lowrank zoo list|train`` and ``lowrank demo``: the built-in models."""
from __future__ import annotations

from .. import resources, solvers
from ..compress import DEFAULT_METHOD, compress
from ..kinds import DEFAULT_SCHEME
from ..planning.table import LayerTable
from ..zoo import ARCHITECTURES, ZOO, get
from . import options

def add(sub) -> None:
    zoo = sub.add_parser("zoo", help="list or train the built-in trained models", description="The zoo of trained models.")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_sub.add_parser("list", help="show every entry, its dataset, recorded metric and weights").set_defaults(run=_list)
    train = zoo_sub.add_parser(
        "train", help="train an entry from its recorded seed and overwrite its weights",
        epilog="example: lowrank zoo train lenet5-fmnist --threads 2",
    )
    train.add_argument("name")
    train.add_argument("--device", default="cpu")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.set_defaults(run=_train)

    demo = sub.add_parser(
        "demo",
        help="compress a small built-in model under a budget and print the plan",
        description="Compress a small built-in model under a budget and print its layer table and plan.",
        epilog="example: lowrank demo --model vgg --macs 0.5 --params 0.4 --scheme spatial",
    )
    demo.add_argument("--model", default="lenet5", choices=sorted(ARCHITECTURES))
    options.add_budget_flags(demo, defaults={r: resources.get(r).demo_default for r in resources.names()})
    demo.add_argument("--method", default=DEFAULT_METHOD, choices=solvers.methods(), help=f"allocation method (default {DEFAULT_METHOD})")
    demo.add_argument("--scheme", default=DEFAULT_SCHEME, choices=options.SCHEME_CHOICES)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
    demo.set_defaults(run=_demo)


def _list(args) -> int:
    for entry in ZOO.values():
        if entry.loader is not None:
            weights = "pretrained weights from a pip package (optional extra)"
        else:
            weights = "weights committed" if entry.weights_path.exists() else "no weights yet: lowrank zoo train " + entry.name
        recorded = f"{entry.recorded_metric:.2%} {entry.metric}" if entry.recorded_metric is not None else "not recorded"
        print(f"{entry.name:18s} {entry.dataset:14s} {recorded:24s} {weights}\n{'':18s} {entry.description}")
    return 0


def _train(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    entry = get(args.name)
    model, history, sha = entry.train(device=args.device, progress=True)
    print(f"{entry.name}: test accuracy per epoch {', '.join(f'{a:.4f}' for a in history)}")
    print(f"weights written to {entry.weights_path} (sha256 {sha})")
    if entry.recorded_metric is not None:
        print(f"recorded: {entry.recorded_metric:.4f}; difference {100 * (history[-1] - entry.recorded_metric):+.2f} pt")
    return 0


def _demo(args) -> int:
    import torch

    torch.manual_seed(args.seed)
    model = ARCHITECTURES[args.model]().eval()
    x = torch.randn(1, 1, 28, 28)
    calib = torch.randn(32, 1, 28, 28)  # no data yet: methods that run the network distil the original's outputs
    budget = options.budget_of(args)
    table = LayerTable(model, x)
    print(f"model: {args.model} (built-in, randomly initialised from seed {args.seed}; trained weights come with the zoo)")
    print(table.summary(), end="\n\n")
    result = compress(model, calib, budget, method=args.method, scheme=args.scheme, table=table, progress=True)
    print(f"{budget}, method {args.method}, scheme {args.scheme}")
    print(result.plan.table(), end="\n\n")
    counted = resources.count(result.model, x, result.plan.totals_after)
    print(f"independent count of the rebuilt model: {options.in_words(counted)}")
    inputs = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        ref, out = model(inputs), result.model(inputs)
    err = ((out - ref).norm() / ref.norm()).item()
    print(f"relative output error against the original on 64 random inputs: {err:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(result.plan.to_json())
        print(f"plan written to {args.json}")
    return 0
