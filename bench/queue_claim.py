"""Benchmark: what one fair claim costs as the jobs table grows, on SQLite and PostgreSQL.

A table of ``--projects`` projects with ``--queued`` queued jobs each (the per-project cap) and
``--finished`` finished jobs spread over them (the history every ``max(started_at)`` reads),
then ``--claims`` claims in a row, each finishing its job before the next (one worker slot).
Prints the median and worst claim time per database, and how many distinct projects the
first ``--projects`` claims served (fair: every one of them).

    .venv/bin/python bench/queue_claim.py [--postgres URL]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.jobs import queue
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.store.tables import JobRow, ProjectRow

NOW = 1_700_000_000.0


def fill(sessions: sessionmaker[Session], projects: int, queued: int, finished: int) -> None:
    rows: list[dict[str, Any]] = []
    base = {
        "created_at": int(NOW),
        "model": "m",
        "base_model": "m",
        "training_file": "file-x",
        "seed": 0,
        "requested": {"hyperparameters": {}, "param": "hyperparameters"},
        "priority": 0,
        "attempt": 0,
        "restarts": 0,
        "step": 0,
        "result_files": [],
    }
    for p in range(projects):
        for q in range(queued):
            rows.append(
                {
                    **base,
                    "id": f"q-{p}-{q}",
                    "project_id": f"p{p}",
                    "status": "queued",
                    "queued_at": NOW + q * projects + p,
                }
            )
    for f in range(finished):
        rows.append(
            {
                **base,
                "id": f"f-{f}",
                "project_id": f"p{f % projects}",
                "status": "succeeded",
                "started_at": int(NOW) - f,
            }
        )
    with transaction(sessions) as session:
        session.execute(
            insert(ProjectRow),
            [{"id": f"p{p}", "name": f"p{p}", "created_at": int(NOW)} for p in range(projects)],
        )
        session.execute(insert(JobRow), rows)


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(url)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    fill(sessions, args.projects, args.queued, args.finished)
    times, served = [], []
    for n in range(args.claims):
        start = time.perf_counter()
        won = queue.claim(
            sessions,
            owner="bench:1:x",
            statuses=("queued", "running"),
            lease_seconds=30,
            now=NOW + 10 * (n + 1),
            start=True,
            priority_ceiling=10,
        )
        times.append(time.perf_counter() - start)
        assert won is not None
        with transaction(sessions) as session:
            job = session.get(JobRow, won.job_id)
            assert job is not None
            served.append(job.project_id)
            job.status, job.lease_owner = "succeeded", None
    engine.dispose()
    return {
        "median_ms": round(statistics.median(times) * 1000, 2),
        "max_ms": round(max(times) * 1000, 2),
        "projects_served_in_first_round": len(set(served[: args.projects])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--queued", type=int, default=10)
    parser.add_argument("--finished", type=int, default=20_000)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--postgres", help="an empty PostgreSQL database's URL")
    args = parser.parse_args()
    result: dict[str, Any] = {k: getattr(args, k) for k in ("projects", "queued", "finished")}
    with tempfile.TemporaryDirectory() as folder:
        result["sqlite"] = run(f"sqlite:///{Path(folder) / 'bench.db'}", args)
    if args.postgres:
        result["postgresql"] = run(args.postgres, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
