"""Would choosing COBLA's candidate after the refit beat the best rule? SmolLM2 at one budget:
COBLA's run, then every distinct candidate rebuilt with the refit and scored on the selection
windows and the test windows.

    python bench/llm_refit_choice.py PARAMS     (e.g. 0.8; about 20 minutes at 2 threads)

Prints one JSON line per distinct candidate (its selection-split loss before the refit, as
COBLA chose by it; perplexity on the selection and the test windows after the refit). The
output of its runs is kept in reports/llm/refit_choice.md."""
import json, sys, time, torch
torch.set_num_threads(2)
import lowrank
from lowrank import Budget
from lowrank.planning.rebuild import rebuild
from lowrank.util.batches import as_batches
from lowrank.zoo import get
from lowrank.zoo.smollm import perplexity
params = float(sys.argv[1])
entry = get("smollm2-shakespeare"); model = entry.load()
t = time.perf_counter()
res = lowrank.compress(model, entry, Budget(params=params), method="cobla")
print("cobla", round(time.perf_counter() - t), "chosen", res.allocation.info["chosen"], flush=True)
problem = res.allocation.problem
names = [g.name for g in problem.groups]
refit_on = list(as_batches(entry.statistics()))
sx, sy = entry.splits.select
seen = {}
for cand, c in res.allocation.info["candidates"].items():
    key = json.dumps(c["ranks"])
    if key in seen:
        print(cand, "same as", seen[key], flush=True); continue
    seen[key] = cand
    t = time.perf_counter()
    m = rebuild(model, dict(zip(names, c["ranks"])), table=res.table, refit_on=refit_on)
    sel = perplexity(m, sx, sy)
    test = lowrank.evaluate(m, entry)
    print(json.dumps({"cand": cand, "before_refit_select_loss": c["score"].get("loss"), "select_ppl": round(sel, 2),
                      "test_ppl": round(test, 2), "s": round(time.perf_counter() - t)}), flush=True)
