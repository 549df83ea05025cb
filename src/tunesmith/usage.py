"""Usage metering: what each deployment served, how long it was hosted, and what jobs trained.

The last step of the data path: the chat endpoint calls :func:`record_request` after every
served request (one ``usage`` row: its tokens), and deleting a deployment — by its owner or by
the idle sweep — calls :func:`record_hosting` (one row: the deployment's whole life, ending
then). :func:`usage_report` sums a project's rows over a time window ``[start, end)``: requests
and tokens by the time they were served, hosting time by how much of each hosting period (or a
live deployment's life so far) falls inside the window, and the trained tokens of each
fine-tuning job that finished inside it — succeeded, cancelled or failed, each once, by what it
trained before it stopped (``JobRow.trained_tokens``, kept up to date step by step by the job
process; see :mod:`tunesmith.data.token_spans` for what a trained token is). Costs are estimated
from the server's price table (``Settings.prices``), which the report echoes so a reader can check
the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tunesmith.errors import InvalidRequest, NotFound
from tunesmith.protocol.usage import (
    Cost,
    DeploymentUsage,
    PriceTable,
    TrainingUsage,
    UsageReport,
    UsageTotals,
)
from tunesmith.settings import Prices
from tunesmith.store.tables import DeploymentEventRow, DeploymentRow, JobRow, UsageRow

MILLION = 1_000_000
HOUR = 3600


def record_request(
    session: Session,
    *,
    deployment: DeploymentRow,
    kind: Literal["chat", "completion"],
    prompt_tokens: int,
    completion_tokens: int,
    now: int,
) -> None:
    """Meters one served request (in the caller's transaction)."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(
            f"token counts cannot be negative; got {prompt_tokens} and {completion_tokens}"
        )
    session.add(
        UsageRow(
            project_id=deployment.project_id,
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            model=deployment.model_id,
            kind=kind,
            created_at=now,
            requests=1,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            hosting_seconds=0,
        )
    )


def record_hosting(session: Session, *, deployment: DeploymentRow, now: int) -> None:
    """Meters a deployment's hosting period, from its creation to ``now`` (its removal)."""
    session.add(
        UsageRow(
            project_id=deployment.project_id,
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            model=deployment.model_id,
            kind="hosting",
            created_at=now,
            requests=0,
            prompt_tokens=0,
            completion_tokens=0,
            hosting_seconds=max(0, now - deployment.created_at),
        )
    )


@dataclass(slots=True)
class _Tally:
    deployment_id: str | None
    name: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    hosting_seconds: int = 0


def usage_report(
    session: Session,
    *,
    project_id: str,
    start_time: int | None,
    end_time: int | None,
    deployment: str | None,
    prices: Prices,
    now: int,
) -> UsageReport:
    """The project's use within ``[start_time, end_time)``; by default from the beginning to
    now (the window then ends one second after ``now``, so what was served now counts)."""
    start = start_time if start_time is not None else 0
    end = end_time if end_time is not None else now + 1
    if end <= start:
        raise InvalidRequest(
            f"end_time ({end}) must be after start_time ({start}); the window is "
            "[start_time, end_time) in Unix seconds.",
            param="end_time",
        )
    if deployment is not None and not _name_was_used(session, project_id, deployment):
        raise NotFound(
            f"No deployment named {deployment!r} ever existed in this project; leave "
            "'deployment' out for the whole project's usage.",
            param="deployment",
            code="deployment_not_found",
        )
    tallies: dict[str | None, _Tally] = {}
    _served(session, tallies, project_id, start, end, deployment)
    _hosted(session, tallies, project_id, start, end, deployment, now)
    live = set(
        session.scalars(select(DeploymentRow.id).where(DeploymentRow.project_id == project_id))
    )
    jobs = [] if deployment is not None else _trained(session, project_id, start, end, prices)
    entries = [
        _entry(t, deleted=t.deployment_id not in live, prices=prices)
        for t in sorted(tallies.values(), key=lambda t: (t.name, t.deployment_id or ""))
    ]
    total = _Tally(None, "", "")
    for t in tallies.values():
        total.requests += t.requests
        total.prompt_tokens += t.prompt_tokens
        total.completion_tokens += t.completion_tokens
        total.hosting_seconds += t.hosting_seconds
    trained = sum(j.trained_tokens for j in jobs)
    return UsageReport(
        project_id=project_id,
        start_time=start,
        end_time=end,
        deployment=deployment,
        totals=UsageTotals(
            requests=total.requests,
            prompt_tokens=total.prompt_tokens,
            completion_tokens=total.completion_tokens,
            total_tokens=total.prompt_tokens + total.completion_tokens,
            hosting_seconds=total.hosting_seconds,
            hosting_hours=_hours(total.hosting_seconds),
            trained_tokens=trained,
            cost=_cost(total, trained, prices),
        ),
        deployments=entries,
        fine_tuning=jobs,
        prices=PriceTable(**prices.model_dump()),
    )


def _served(
    session: Session,
    tallies: dict[str | None, _Tally],
    project_id: str,
    start: int,
    end: int,
    deployment: str | None,
) -> None:
    stmt = (
        select(
            UsageRow.deployment_id,
            UsageRow.deployment_name,
            UsageRow.model,
            func.sum(UsageRow.requests),
            func.sum(UsageRow.prompt_tokens),
            func.sum(UsageRow.completion_tokens),
        )
        .where(
            UsageRow.project_id == project_id,
            UsageRow.kind != "hosting",
            UsageRow.created_at >= start,
            UsageRow.created_at < end,
        )
        .group_by(UsageRow.deployment_id, UsageRow.deployment_name, UsageRow.model)
    )
    if deployment is not None:
        stmt = stmt.where(UsageRow.deployment_name == deployment)
    for dep_id, name, model, requests, prompt, completion in session.execute(stmt):
        tally = tallies.setdefault(dep_id, _Tally(dep_id, name, model))
        tally.requests += int(requests or 0)
        tally.prompt_tokens += int(prompt or 0)
        tally.completion_tokens += int(completion or 0)


def _hosted(
    session: Session,
    tallies: dict[str | None, _Tally],
    project_id: str,
    start: int,
    end: int,
    deployment: str | None,
    now: int,
) -> None:
    """Hosting time inside the window: finished periods (``hosting`` rows, each ending at its
    ``created_at``) and the lives so far of the deployments that still exist."""
    periods = select(UsageRow).where(
        UsageRow.project_id == project_id,
        UsageRow.kind == "hosting",
        UsageRow.created_at > start,  # ended after the window began
        UsageRow.created_at - UsageRow.hosting_seconds < end,  # began before it ended
    )
    live = select(DeploymentRow).where(
        DeploymentRow.project_id == project_id, DeploymentRow.created_at < end
    )
    if deployment is not None:
        periods = periods.where(UsageRow.deployment_name == deployment)
        live = live.where(DeploymentRow.name == deployment)
    for row in session.scalars(periods):
        overlap = _overlap(row.created_at - row.hosting_seconds, row.created_at, start, end)
        tally = tallies.setdefault(
            row.deployment_id, _Tally(row.deployment_id, row.deployment_name, row.model)
        )
        tally.hosting_seconds += overlap
    for dep in session.scalars(live):
        tally = tallies.setdefault(dep.id, _Tally(dep.id, dep.name, dep.model_id))
        tally.hosting_seconds += _overlap(dep.created_at, now, start, end)


def _trained(
    session: Session, project_id: str, start: int, end: int, prices: Prices
) -> list[TrainingUsage]:
    """Jobs that finished inside the window having trained tokens: succeeded, cancelled or
    failed, a stopped job by what it trained before it stopped."""
    rows = session.scalars(
        select(JobRow)
        .where(
            JobRow.project_id == project_id,
            JobRow.finished_at >= start,
            JobRow.finished_at < end,
            JobRow.trained_tokens > 0,
        )
        .order_by(JobRow.finished_at, JobRow.id)
    )
    return [
        TrainingUsage(
            fine_tuning_job=job.id,
            model=job.model,
            fine_tuned_model=job.fine_tuned_model,
            status=job.status,
            finished_at=job.finished_at or 0,
            trained_tokens=job.trained_tokens or 0,
            cost=_money((job.trained_tokens or 0) / MILLION * prices.training_per_million_tokens),
        )
        for job in rows
    ]


def _entry(tally: _Tally, *, deleted: bool, prices: Prices) -> DeploymentUsage:
    return DeploymentUsage(
        deployment_id=tally.deployment_id,
        deployment=tally.name,
        model=tally.model,
        deleted=deleted,
        requests=tally.requests,
        prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens,
        total_tokens=tally.prompt_tokens + tally.completion_tokens,
        hosting_seconds=tally.hosting_seconds,
        hosting_hours=_hours(tally.hosting_seconds),
        cost=_cost(tally, 0, prices),
    )


def _cost(tally: _Tally, trained_tokens: int, prices: Prices) -> Cost:
    input_cost = tally.prompt_tokens / MILLION * prices.input_per_million_tokens
    output_cost = tally.completion_tokens / MILLION * prices.output_per_million_tokens
    training = trained_tokens / MILLION * prices.training_per_million_tokens
    hosting = tally.hosting_seconds / HOUR * prices.hosting_per_hour
    return Cost(
        currency=prices.currency,
        input=_money(input_cost),
        output=_money(output_cost),
        training=_money(training),
        hosting=_money(hosting),
        total=_money(input_cost + output_cost + training + hosting),
    )


def _name_was_used(session: Session, project_id: str, name: str) -> bool:
    """Every deployment has a ``created`` event, kept after it is deleted."""
    found = session.scalar(
        select(DeploymentEventRow.id)
        .where(
            DeploymentEventRow.project_id == project_id,
            DeploymentEventRow.deployment_name == name,
        )
        .limit(1)
    )
    return found is not None


def _overlap(begin: int, finish: int, start: int, end: int) -> int:
    return max(0, min(finish, end) - max(begin, start))


def _hours(seconds: int) -> float:
    return round(seconds / HOUR, 6)


def _money(amount: float) -> float:
    return round(amount, 6)
