"""The README and the documentation site: short, every link resolving, the set-up commands
the ones CI runs, the site building strictly (a broken link or a renamed function fails)."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [link for link in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://|#|mailto:", link)]


def test_the_readme_is_short_and_its_commands_are_the_ones_ci_runs():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines"
    ci = (ROOT / ".ci" / "run").read_text()
    main_job = ("apt-get update && apt-get install -y dataset-fashion-mnist && pip install torch==2.13.0 && pip install -e . "
                "&& lowrank sweep")
    tests = "pip install torch==2.13.0 && pip install -e '.[dev]' && python -m pytest"
    assert main_job in lines and tests in lines
    assert main_job in ci and tests in ci


@pytest.mark.parametrize("page", ["README.md", "reports/README.md"])
def test_every_link_resolves(page):
    path = ROOT / page
    links = _links(path)
    assert links, f"{page} links nothing"
    missing = [link for link in links if not (path.parent / link.split("#")[0]).exists()]
    assert not missing, missing


def test_reports_hold_only_question_folders_and_an_index_that_lists_each():
    top = sorted(p.name for p in (ROOT / "reports").iterdir())
    assert "README.md" in top and all((ROOT / "reports" / name).is_dir() for name in top if name != "README.md"), top
    index = (ROOT / "reports" / "README.md").read_text()
    for folder in (p for p in (ROOT / "reports").iterdir() if p.is_dir()):
        assert f"`{folder.name}/`" in index, f"reports/README.md has no section for {folder.name}/"
        if (folder / "index.md").exists():  # the folder is one report (a sweep's)
            assert f"]({folder.name}/index.md)" in index
            continue
        for report in folder.iterdir():  # every report in a folder is listed by its link
            if report.suffix == ".md" or report.is_dir():
                name = f"{folder.name}/{report.name}"
                assert f"]({name}" in index or report.is_dir() and f"]({name}/" in index, f"{name} is not in reports/README.md"


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers")),
                    reason="the docs extra is not installed in this Python: pip install -e '.[docs]'")
def test_the_site_builds_strictly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("lowrank.compress", "lowrank.Budget", "lowrank.evaluate", "lowrank.resources", "lowrank.zoo.get", "lowrank.LatencyTarget"):
        assert name in api, f"the API reference lacks {name}"
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "lowrank compress" in cli and "--latency-memory-format" in cli  # from the parser's own --help
