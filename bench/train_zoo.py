"""Train every zoo entry from its seed and print name, accuracy per epoch and SHA-256.

    python bench/train_zoo.py [--device cuda] [NAME ...]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lowrank.zoo import ZOO  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("names", nargs="*", default=[n for n in ZOO if ZOO[n].dataset == "fashion-mnist"])
parser.add_argument("--device", default="cpu")
parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
parser.add_argument("--out", default=None, help="folder for the weights (default: the package's weights folder)")
args = parser.parse_args()
if args.threads:
    import torch

    torch.set_num_threads(args.threads)
for name in args.names:
    entry = ZOO[name]
    t = time.time()
    out = Path(args.out) / f"{name}.pt" if args.out else None
    model, history, sha = entry.train(device=args.device, progress=False, out=out)
    cpu_acc = entry.evaluate(model)
    print(json.dumps({"name": name, "history": history, "cpu_test_accuracy": cpu_acc, "sha256": sha, "seconds": round(time.time() - t, 1)}), flush=True)
