"""Command-line interface: ``lowrank demo`` (more verbs arrive with the sweep and zoo work)."""
from __future__ import annotations

import argparse
import sys

from .budget import Budget


def _demo(args) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .compress import compress
    from .layers import LayerTable
    from .zoo import ARCHITECTURES

    torch.manual_seed(args.seed)
    model = ARCHITECTURES[args.model]().eval()
    x = torch.randn(1, 1, 28, 28)
    calib = torch.randn(32, 1, 28, 28)  # no data yet: methods that run the network distil the original's outputs
    budget = Budget(macs=args.macs, params=args.params)
    table = LayerTable(model, x)
    print(f"model: {args.model} (built-in, randomly initialised from seed {args.seed}; trained weights come with the zoo)")
    print(table.summary(), end="\n\n")
    result = compress(model, calib, budget, method=args.method, scheme=args.scheme, table=table, progress=True)
    print(f"{budget}, method {args.method}, scheme {args.scheme}")
    print(result.plan.table(), end="\n\n")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        result.model(x)
    macs, params = counter.get_total_flops() // 2, sum(p.numel() for p in result.model.parameters())
    print(f"independent count of the rebuilt model: {macs:,} MACs (FlopCounterMode), {params:,} parameters")
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


def build_parser() -> argparse.ArgumentParser:
    import solvers

    from .zoo import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="lowrank", description="Compress PyTorch networks by low-rank factorisation under MAC and parameter budgets.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="compress a small built-in model under a budget and print the plan",
        description="Compress a small built-in model under a budget and print its layer table and plan.",
        epilog="example: lowrank demo --model vgg --macs 0.5 --params 0.4 --scheme spatial",
    )
    demo.add_argument("--model", default="lenet5", choices=sorted(ARCHITECTURES))
    demo.add_argument("--macs", type=float, default=0.5, help="MAC budget: fraction (0, 1] or absolute count (default 0.5)")
    demo.add_argument("--params", type=float, default=0.4, help="parameter budget: fraction (0, 1] or absolute count (default 0.4)")
    demo.add_argument("--method", default="uniform", choices=solvers.methods(), help="allocation method (default uniform)")
    demo.add_argument("--scheme", default="channel", choices=["channel", "spatial", "auto"])
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:  # user mistakes (bad budget, infeasible budget, unknown method): one clear line
        print(f"lowrank: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
