"""The results store: one SQLite row per run, keyed by the run's parameters.

Crash safety comes from SQLite itself: every row is written in one transaction (WAL
journal, ``synchronous=FULL``), so a process killed at any moment leaves either the whole
row or nothing, and the next open rolls back what was in flight. Only the sweep's parent
process writes; workers return rows to it.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from .. import resources

# Flat columns for what reports group and filter by; lists and dicts go in as JSON text.
# Per resource (see lowrank.resources): its budget, the independent count of the rebuilt
# model, the original's, the fraction kept, the planned cost and, for a measured resource
# (``cheap=False``), the measurement's noise (NULL for exact counts).
def _resource_columns() -> dict[str, str]:
    cols = {}
    for name in resources.names():
        count = "INTEGER" if resources.get(name).integer else "REAL"
        cols.update({f"budget_{name}": "REAL", name: count, f"original_{name}": count,
                     f"{name}_fraction": "REAL", f"planned_{name}": count})
        if not resources.get(name).cheap:
            cols[f"{name}_noise"] = "REAL"
    return cols


COLUMNS = {
    "key": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL",  # ok | infeasible | error
    "model": "TEXT", "dataset": "TEXT", "metric_name": "TEXT", "method": "TEXT", "scheme": "TEXT", "basis": "TEXT", "rank_multiple": "INTEGER", "seed": "INTEGER",
    "calib_samples": "INTEGER", "select_samples": "INTEGER", "eval_samples": "INTEGER",
    "finetune_epochs": "INTEGER", "finetune_samples": "INTEGER", "kd": "REAL", "recalibrate": "INTEGER", "refit": "INTEGER",
    **_resource_columns(),
    "fits": "INTEGER",
    "metric_original": "REAL", "metric_before": "REAL", "metric_after": "REAL",
    "metric_chance": "REAL",  # the best constant prediction's metric: the floor a wrecked model falls to
    "sample_text": "TEXT", "original_sample_text": "TEXT",  # what a language model writes from one prompt
    "metric_original_finetuned": "REAL",  # the control: the original fine-tuned by the same recipe
    "solver_seconds": "REAL", "total_seconds": "REAL",
    "ranks": "TEXT", "schemes": "TEXT", "full_ranks": "TEXT", "finetune_history": "TEXT",
    "plan_facts": "TEXT",  # why the plan is as it is: attempts, floors, a measured resource's ceiling, what it cut
    "spec": "TEXT", "versions": "TEXT", "git_revision": "TEXT", "host": "TEXT", "error": "TEXT",
    "finished_at": "TEXT",
}
JSON_COLUMNS = ("ranks", "schemes", "full_ranks", "finetune_history", "plan_facts", "spec", "versions")


class ResultStore:
    """``ResultStore(path)``: runs by key, and which runs each named sweep asked for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"the results database {self.path} is a folder: give a file path (--db on the command line)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._named():
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            try:
                self._create()
            except sqlite3.Error:
                self.db.close()
                raise

    def _create(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        cols = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
        self.db.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
        have = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        for name, kind in COLUMNS.items():  # a database from before a resource was registered
            if name not in have:
                self.db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
        self.db.execute("CREATE TABLE IF NOT EXISTS sweep_runs (sweep TEXT, key TEXT, position INTEGER, PRIMARY KEY (sweep, key))")
        self.db.execute("CREATE TABLE IF NOT EXISTS sweeps (name TEXT PRIMARY KEY, config TEXT, updated_at TEXT)")

    def _named(self):
        return _named_errors(self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def register_sweep(self, name: str, config: dict, keys: Iterable[str]) -> None:
        """Record which runs a sweep consists of (idempotent), in one transaction."""
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?)", (name, json.dumps(config, sort_keys=True), _now())
            )
            self.db.execute("DELETE FROM sweep_runs WHERE sweep = ?", (name,))
            self.db.executemany("INSERT INTO sweep_runs VALUES (?, ?, ?)", [(name, k, i) for i, k in enumerate(keys)])

    def done_keys(self, retry_errors: bool = False) -> set[str]:
        """Keys with a stored row (with ``retry_errors``, rows that failed do not count)."""
        where = " WHERE status != 'error'" if retry_errors else ""
        return {k for (k,) in self.db.execute(f"SELECT key FROM runs{where}")}

    def add(self, row: dict) -> None:
        """Write one run's row atomically; a row for the same key is replaced (a retried error)."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns: {sorted(unknown)}")
        # JSON keeps dict order: per-layer columns stay in network order
        values = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}
        values.setdefault("finished_at", _now())
        names = list(values)
        with self._transaction():
            self.db.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
                [values[n] for n in names],
            )

    def rows(self, sweep: str | None = None) -> list[dict]:
        """Stored runs as dicts (JSON columns decoded); a sweep's runs in its own order."""
        if sweep is None:
            cur = self.db.execute("SELECT * FROM runs ORDER BY finished_at, key")
        else:
            cur = self.db.execute(
                "SELECT runs.* FROM runs JOIN sweep_runs ON runs.key = sweep_runs.key WHERE sweep_runs.sweep = ? "
                "ORDER BY sweep_runs.position", (sweep,),
            )
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            row = dict(zip(names, values))
            for k in JSON_COLUMNS:
                if row.get(k) is not None:
                    row[k] = json.loads(row[k])
            out.append(row)
        return out

    def sweeps(self) -> dict[str, dict]:
        return {name: json.loads(cfg) for name, cfg in self.db.execute("SELECT name, config FROM sweeps")}

    def expected(self, sweep: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM sweep_runs WHERE sweep = ?", (sweep,)).fetchone()[0]

    @contextmanager
    def _transaction(self):
        """One transaction; SQLite's errors (a read-only file, a full disk) name the file."""
        with self._named(), _Transaction(self.db):
            yield


class StoreError(ValueError):
    """The results database cannot be opened, read or written; the message names the file."""


@contextmanager
def _named_errors(path: Path):
    """SQLite's errors as a :class:`StoreError` naming the file and what to do."""
    try:
        yield
    except sqlite3.Error as err:
        text = str(err)
        if "not a database" in text:
            why = "is not a results database (SQLite: file is not a database); it was left as it was"
        elif "readonly" in text or "read-only" in text:
            why = "cannot be written (SQLite: read-only database)"
        elif "unable to open" in text:
            why = "cannot be opened or created (SQLite: unable to open database file): its folder must exist and be writable"
        else:
            why = f"failed (SQLite: {text})"
        raise StoreError(f"the results database {path} {why}. Choose another database path (--db on the command line)") from err


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"
