"""``tunesmith usage``: the project's requests, tokens, hosting, training and their cost."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from tunesmith.cli.connection import CliError, add_connection_flags, connect
from tunesmith.cli.output import emit, table


def register(sub: Any) -> None:
    usage = sub.add_parser("usage", help="requests, tokens, hosting, training and cost")
    usage.add_argument("--since", help="start: Unix seconds or an ISO date/time (UTC if bare)")
    usage.add_argument("--until", help="end (exclusive): Unix seconds or an ISO date/time")
    usage.add_argument("--deployment", help="only this deployment (also a deleted one)")
    add_connection_flags(usage)
    usage.set_defaults(func=usage_command)


def parse_time(value: str, flag: str) -> int:
    """Unix seconds, or an ISO 8601 date or date-time (UTC unless it names a zone)."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{flag} {value!r}: not Unix seconds or an ISO date such as 2025-01-31"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


def usage_command(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.since:
        params["start_time"] = parse_time(args.since, "--since")
    if args.until:
        params["end_time"] = parse_time(args.until, "--until")
    if args.deployment:
        params["deployment"] = args.deployment
    report = connect(args).request("GET", "/v1/usage", params=params)
    if args.json:
        emit(report, [], as_json=True)
        return 0
    totals = report.get("totals", {})
    cost = totals.get("cost", {})
    currency = cost.get("currency", "")
    print(
        f"window {_when(report.get('start_time'))} to {_when(report.get('end_time'))}"
        + (f", deployment {report['deployment']}" if report.get("deployment") else "")
    )
    print(
        f"totals: {totals.get('requests')} requests, {totals.get('prompt_tokens')} prompt + "
        f"{totals.get('completion_tokens')} completion tokens, {totals.get('hosting_hours')} "
        f"hosting hours, {totals.get('trained_tokens')} trained tokens"
    )
    print(
        f"cost:   {cost.get('total')} {currency} (input {cost.get('input')}, output "
        f"{cost.get('output')}, training {cost.get('training')}, hosting {cost.get('hosting')})"
    )
    print()
    table(
        report.get("deployments", []),
        [
            ("deployment", "deployment"),
            ("model", "model"),
            ("deleted", "deleted"),
            ("requests", "requests"),
            ("prompt", "prompt_tokens"),
            ("completion", "completion_tokens"),
            ("hosting h", "hosting_hours"),
            ("cost", "cost.total"),
        ],
    )
    if report.get("fine_tuning"):
        print()
        table(
            report["fine_tuning"],
            [
                ("job", "fine_tuning_job"),
                ("model", "fine_tuned_model"),
                ("status", "status"),
                ("trained tokens", "trained_tokens"),
                ("cost", "cost"),
                ("finished", "finished_at"),
            ],
        )
    return 0


def _when(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    return datetime.datetime.fromtimestamp(value, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
