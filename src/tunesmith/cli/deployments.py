"""``tunesmith deployments create|list|show|keys|regenerate-key|rm``: making models callable."""

from __future__ import annotations

import argparse
from typing import Any

from tunesmith.cli.connection import Connection, add_connection_flags, connect
from tunesmith.cli.output import emit

COLUMNS = [
    ("name", "name"),
    ("model", "model_id"),
    ("rpm", "rate_limits.requests_per_minute"),
    ("tpm", "rate_limits.tokens_per_minute"),
    ("concurrent", "rate_limits.max_concurrent_requests"),
    ("filter", "content_filter"),
    ("status", "status"),
    ("created", "created_at"),
    ("last used", "last_used_at"),
]
REASON = ("reason", "error.message")
"""Why a failed deployment's model cannot be served; last, since it is long."""
LIST_COLUMNS = [*COLUMNS, REASON]
DETAIL_COLUMNS = [*COLUMNS, ("scoring uri", "scoring_uri"), ("error", "error.code"), REASON]
"""``create`` and ``show``: one deployment, with the endpoint its clients call."""
KEY_COLUMNS = [("primary", "primary_key"), ("secondary", "secondary_key")]


def register(sub: Any) -> None:
    deps = sub.add_parser("deployments", help="deploy models and manage their keys")
    deps_sub = deps.add_subparsers(dest="deployments_command", required=True)
    create = deps_sub.add_parser("create", help="deploy a model under a name")
    create.add_argument("name")
    create.add_argument("--model", required=True, help="a model id, checkpoint or registered name")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--max-concurrent", type=int, help="requests in flight at once")
    create.add_argument(
        "--no-content-filter", action="store_true", help="turn the content filter off"
    )
    create.set_defaults(func=create_command)
    listing = deps_sub.add_parser("list", help="the project's deployments")
    listing.set_defaults(func=list_command)
    show = deps_sub.add_parser("show", help="one deployment")
    show.add_argument("name")
    show.set_defaults(func=show_command)
    keys = deps_sub.add_parser("keys", help="a deployment's two keys")
    keys.add_argument("name")
    keys.set_defaults(func=keys_command)
    regen = deps_sub.add_parser("regenerate-key", help="replace one of the two keys")
    regen.add_argument("name")
    regen.add_argument("key_name", choices=["primary", "secondary"])
    regen.set_defaults(func=regenerate_command)
    rm = deps_sub.add_parser("rm", help="delete a deployment (the model is kept)")
    rm.add_argument("name")
    rm.set_defaults(func=rm_command)
    for parser in (create, listing, show, keys, regen, rm):
        add_connection_flags(parser)


def create_command(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "model": args.model}
    limits = {
        key: value
        for key, value in {
            "requests_per_minute": args.rpm,
            "tokens_per_minute": args.tpm,
            "max_concurrent_requests": args.max_concurrent,
        }.items()
        if value is not None
    }
    if limits:
        body["rate_limits"] = limits
    if args.no_content_filter:
        body["content_filter"] = False
    created = connect(args).request("POST", "/v1/deployments", json=body)
    emit(created, DETAIL_COLUMNS, as_json=args.json)
    return 0


def list_command(args: argparse.Namespace) -> int:
    rows = all_pages(connect(args), "/v1/deployments")
    emit(rows, LIST_COLUMNS, as_json=args.json)
    return 0


def show_command(args: argparse.Namespace) -> int:
    shown = connect(args).request("GET", f"/v1/deployments/{args.name}")
    emit(shown, DETAIL_COLUMNS, as_json=args.json)
    return 0


def keys_command(args: argparse.Namespace) -> int:
    keys = connect(args).request("GET", f"/v1/deployments/{args.name}/keys")
    emit(keys, KEY_COLUMNS, as_json=args.json)
    return 0


def regenerate_command(args: argparse.Namespace) -> int:
    keys = connect(args).request(
        "POST", f"/v1/deployments/{args.name}/keys/regenerate", json={"key_name": args.key_name}
    )
    emit(keys, KEY_COLUMNS, as_json=args.json)
    return 0


def rm_command(args: argparse.Namespace) -> int:
    deleted = connect(args).request("DELETE", f"/v1/deployments/{args.name}")
    emit(deleted, [("name", "name"), ("id", "id"), ("deleted", "deleted")], as_json=args.json)
    return 0


def all_pages(conn: Connection, path: str, **params: Any) -> list[Any]:
    """Every object of a paged list (``data``, ``has_more``, ``last_id``)."""
    rows: list[Any] = []
    after: str | None = None
    while True:
        query: dict[str, Any] = {"limit": 100, **params, **({"after": after} if after else {})}
        page = conn.request("GET", path, params=query)
        rows.extend(page.get("data", []))
        if not page.get("has_more") or not page.get("data"):
            return rows
        after = page.get("last_id") or page["data"][-1]["id"]
