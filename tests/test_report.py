"""Reports: every referenced image exists, the HTML parses, the tables hold every run."""
import csv
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch

pytest.importorskip("sklearn")

from lowrank.cli import main  # noqa: E402
from lowrank.report import make_report  # noqa: E402
from lowrank.experiment.store import ResultStore  # noqa: E402
from lowrank.experiment.sweep import SweepConfig, run_sweep  # noqa: E402


class PageParser(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.images, self.stack, self.rows, self.headings = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "tr":
            self.rows += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] in ("h1", "h2"):
            self.headings.append(data)


@pytest.fixture(scope="module")
def sweep_db(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    config = SweepConfig(
        name="rep", models=["lenet5-digits"], budgets=[{"macs": 0.3}, {"macs": 0.6}, {"params": 0.4}, {"macs": 0.5, "params": 0.3}],
        methods=["exact", "uniform", "energy"], seeds=[0, 1], finetune_epochs=1, finetune_samples=256, eval_samples=None,
        bases=["weight", "activation"], calib_samples=64,
    )
    run_sweep(config, db=d / "runs.sqlite", cache_dir=d / "cache", workers=1, progress=False)
    return d / "runs.sqlite"


def test_report_files_images_and_tables(sweep_db, tmp_path):
    with ResultStore(sweep_db) as store:
        rows = store.rows(sweep="rep")
    index = make_report(rows, tmp_path / "rep", title="test report")
    out = index.parent
    parser = PageParser()
    parser.feed(index.read_text())
    parser.close()
    assert parser.stack == [], f"unclosed tags {parser.stack}"
    assert parser.images and all((out / src).is_file() and (out / src).stat().st_size > 5000 for src in parser.images)
    # one curve plot per budget axis (MACs, params, both) and a rank plot
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "lenet5-digits-macs-params.png", "lenet5-digits-macs.png", "lenet5-digits-params.png", "lenet5-digits-ranks.png"]
    assert "lenet5-digits" in parser.headings
    assert parser.rows >= len(rows) + 1  # every run in a table row
    md = (out / "index.md").read_text()
    for line in md.splitlines():
        if line.startswith("!["):
            assert (out / line[line.rindex("(") + 1 : -1]).is_file()
    with open(out / "runs.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) == 48
    assert "exact (activation)" in md and "exact (weight)" in md  # each basis labelled apart in the tables
    assert {r["key"] for r in csv_rows} == {r["key"] for r in rows}
    as_json = json.loads((out / "runs.json").read_text())
    assert as_json == json.loads(json.dumps(rows, sort_keys=True))
    assert all(r["metric_after"] is not None and len(r["finetune_history"]) == 1 for r in as_json)
    assert "The original fine-tuned by the same recipe (1 epochs)" in md and "original fine-tuned" in md
    assert "MACs per sample" in md and "(torch.utils.flop_counter MACs; parameters counted from the module)" in md


def test_a_measured_resource_is_reported_in_its_own_units_and_check(sweep_db, tmp_path):
    """Latency is microseconds per batch, measured: the page must not call it a count per sample."""
    with ResultStore(sweep_db) as store:
        rows = store.rows(sweep="rep")
    for r in rows:
        r.update(original_latency=2345.6, latency=1500.0, latency_fraction=1500.0 / 2345.6, latency_noise=12.0)
    md = (make_report(rows, tmp_path / "lat", title="latency").parent / "index.md").read_text()
    assert "2.3 ms per batch (measured)" in md and "latency us per sample" not in md
    assert "latency timed alternately with the original, held within the measured noise" in md


def test_fine_tuned_runs_carry_the_original_fine_tuned_by_the_same_recipe(sweep_db):
    """The control beside every fine-tuned number: one per seed (the recipe's data order),
    equal to fine-tuning a copy of the original directly, and the original stays untouched."""
    import copy

    from lowrank.experiment.runner import load_model
    from lowrank.finetuning import finetune

    with ResultStore(sweep_db) as store:
        rows = store.rows(sweep="rep")
    controls = {r["seed"]: {x["metric_original_finetuned"] for x in rows if x["seed"] == r["seed"]} for r in rows}
    assert all(len(v) == 1 and None not in v for v in controls.values()), controls
    loaded = load_model("lenet5-digits")
    before = copy.deepcopy(loaded.model.state_dict())
    direct = finetune(copy.deepcopy(loaded.model), loaded.entry, epochs=1, samples_per_epoch=256, seed=0, progress=False)
    (control,) = controls[0]
    assert control == pytest.approx(direct[-1], abs=1e-9)
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())


def test_report_cli_and_its_errors(sweep_db, tmp_path, capsys):
    assert main(["report", "--db", str(sweep_db), "--name", "rep", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").exists()
    assert main(["report", "--db", str(sweep_db), "--name", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no runs of sweep 'nope'" in err[0] and "rep" in err[0]
    assert main(["report", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert "run `lowrank sweep` first" in capsys.readouterr().err


PROBE = """<script>
window.addEventListener("load", () => {
  const shown = [...document.images].map(i => i.getAttribute("src") + " " + i.clientWidth + " " + i.naturalWidth);
  document.body.setAttribute("data-widths", shown.join("|"));
});
</script>"""


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_with_every_image_at_full_width(sweep_db, tmp_path):
    """A reader's browser: the page renders with plots, and no image is shrunk below 90% of
    its own width (a 5,808-pixel-wide plot squeezed into the page is unreadable)."""
    with ResultStore(sweep_db) as store:
        rows = store.rows(sweep="rep")
    index = make_report(rows, tmp_path / "rep", title="test report")
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]
    shot = tmp_path / "shot.png"
    subprocess.run([*chromium, f"--screenshot={shot}", index.as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a rendered page with plots, not a blank one
    probe = index.with_name("probe.html")
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([*chromium, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    widths = dom.split('data-widths="')[1].split('"')[0].split("|")
    assert len(widths) == 4, widths
    for entry in widths:
        src, shown, natural = entry.split(" ")
        assert int(natural) > 300 and int(shown) >= 0.9 * int(natural), entry
    # a 200-layer model under every method in both bases: 16 series, still shown whole
    import copy

    import solvers

    deep = []
    for r in rows:
        if r["status"] == "ok" and r["seed"] == 0:
            for method in solvers.methods():
                d = copy.deepcopy(r)
                d.update(method=method, key=f"{r['key']}-{method}", model="deep",
                         full_ranks={f"blocks.{i}.conv": 64 for i in range(200)}, ranks={f"blocks.{i}.conv": (i * 7) % 65 for i in range(200)})
                deep.append(d)
    index = make_report(deep, tmp_path / "deep", title="deep")
    probe = index.with_name("probe.html")
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([*chromium, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    for entry in dom.split('data-widths="')[1].split('"')[0].split("|"):
        src, shown, natural = entry.split(" ")
        assert int(shown) >= 0.9 * int(natural), entry


def test_every_series_in_every_plot_is_told_apart(sweep_db, tmp_path):
    """Colour, marker and line style together are distinct for every series of a plot, the
    fine-tuned ones included; the method keeps its colour and marker across plots."""
    from lowrank.report.labels import budget_axis, varying
    from lowrank.report.plots import method_style, plot_budget_curves, plot_rank_heatmap

    with ResultStore(sweep_db) as store:
        rows = [r for r in store.rows(sweep="rep") if r["status"] == "ok"]
    fields = varying(rows)
    assert fields == ("basis",)
    for axis in {budget_axis(r) for r in rows}:
        styles = plot_budget_curves([r for r in rows if budget_axis(r) == axis], "lenet5-digits", axis, tmp_path / f"{axis}.png", fields)
        assert len(styles) == 3 * 2 * 2  # 3 methods x 2 bases, before and after fine-tuning
        assert len({s[1:] for s in styles}) == len(styles), styles
        assert len({s[0] for s in styles}) == len(styles)
    import solvers
    from lowrank.report.plots import STYLE_ORDER
    assert set(solvers.methods()) <= set(STYLE_ORDER), "a new method: append it to STYLE_ORDER"
    assert len({method_style(m) for m in solvers.methods()}) == len(solvers.methods())
    assert method_style("uniform") == ("#000000", "X") and method_style("zhang") == ("#F0E442", "*")  # as before svdllm joined
    columns = plot_rank_heatmap([r for r in rows if r["seed"] == 0 and r["budget_macs"] == 0.3 and r["budget_params"] is None],
                                "lenet5-digits", "MACs <= 30%", tmp_path / "ranks.png", fields)
    assert len(columns) == 6


def test_a_metric_that_falls_is_handled_as_one():
    from lowrank.report.labels import higher_is_better
    from lowrank.report.plots import pareto

    assert higher_is_better("top-1 accuracy") and not higher_is_better("perplexity") and not higher_is_better("test loss")
    points = [(0.3, 40.0), (0.5, 20.0), (0.4, 50.0), (0.7, 15.0)]
    assert pareto(points, higher=False) == [(0.3, 40.0), (0.5, 20.0), (0.7, 15.0)]
    assert pareto(points, higher=True) == [(0.3, 40.0), (0.4, 50.0)]


def test_budget_labels_name_a_fraction_plainly_and_an_absolute_limit_in_its_unit():
    from lowrank.report.labels import budget_label

    assert budget_label({"budget_macs": 0.5, "budget_latency": 0.625}) == "MACs <= 50%, latency <= 62%"
    assert budget_label({"budget_latency": 40000.0}) == "latency <= 40,000 us"
