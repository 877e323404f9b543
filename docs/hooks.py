"""MkDocs hooks: the committed reports become part of the site (so a link into reports/ is
checked like any other), the benchmarks page shows the reports' own index, and the command
line page is made from the real parser's ``--help``."""
from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
KEEP = {".md", ".png", ".csv", ".json"}  # a sweep's index.html would collide with its index.md


def on_files(files, config):
    for path in sorted(REPORTS.rglob("*")):
        if path.is_file() and path.suffix in KEEP:
            files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files):
    if "<!-- lowrank-cli-help -->" in markdown:
        markdown = markdown.replace("<!-- lowrank-cli-help -->", cli_help())
    if "<!-- lowrank-reports-index -->" in markdown:
        index = (REPORTS / "README.md").read_text().split("\n", 1)[1]  # without its title
        markdown = markdown.replace("<!-- lowrank-reports-index -->", re.sub(r"\]\((?!http)", "](reports/", index))
    return markdown


def cli_help() -> str:
    """Every command's ``--help``, as the parser prints it."""
    from lowrank.cli import build_parser, subcommands

    parser = build_parser()
    out = [f"```text\n{parser.format_help()}```"]
    out += [f"## lowrank {name}\n\n```text\n{sub.format_help()}```" for name, sub in subcommands(parser)]
    return "\n\n".join(out)
