"""Reports: a sweep's rows turned into ``index.md``, a static ``index.html``, PNG plots,
``runs.csv`` and ``runs.json`` in one folder (:mod:`.make`).

The page is built once as blocks and rendered twice (:mod:`.page`); the HTML needs no
server: its images are files beside it. Budget axes, labels and columns come from the
registered resources (:mod:`.labels`), so a new resource shows up without edits here.
"""
from .labels import budget_axis, budget_label
from .make import make_report, write_runs

__all__ = ["budget_axis", "budget_label", "make_report", "write_runs"]
