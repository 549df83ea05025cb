"""``tunesmith projects …`` and ``tunesmith keys …``: the admin's projects and API keys."""

from __future__ import annotations

import argparse
from typing import Any

from tunesmith.cli.connection import add_connection_flags, connect
from tunesmith.cli.deployments import all_pages
from tunesmith.cli.output import emit

PROJECT_COLUMNS = [
    ("id", "id"),
    ("name", "name"),
    ("status", "status"),
    ("created", "created_at"),
    ("archived", "archived_at"),
]
KEY_COLUMNS = [
    ("id", "id"),
    ("name", "name"),
    ("role", "role"),
    ("key", "redacted_value"),
    ("created", "created_at"),
    ("last used", "last_used_at"),
]


def register(sub: Any) -> None:
    projects = sub.add_parser("projects", help="projects (admin key)")
    p_sub = projects.add_subparsers(dest="projects_command", required=True)
    create = p_sub.add_parser("create", help="a new project")
    create.add_argument("name")
    create.set_defaults(func=create_project)
    listing = p_sub.add_parser("list", help="the projects")
    listing.add_argument("--all", action="store_true", help="include archived projects")
    listing.set_defaults(func=list_projects)
    archive = p_sub.add_parser("archive", help="archive a project (its keys stop working)")
    archive.add_argument("id")
    archive.set_defaults(func=archive_project)

    keys = sub.add_parser("keys", help="a project's API keys (admin key)")
    k_sub = keys.add_subparsers(dest="keys_command", required=True)
    kcreate = k_sub.add_parser("create", help="a new key; its value is shown only now")
    kcreate.add_argument("--project", required=True)
    kcreate.add_argument("--name", required=True)
    kcreate.add_argument("--role", required=True, choices=["owner", "contributor", "reader"])
    kcreate.set_defaults(func=create_key)
    klist = k_sub.add_parser("list", help="a project's keys (redacted)")
    klist.add_argument("--project", required=True)
    klist.set_defaults(func=list_keys)
    revoke = k_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("--project", required=True)
    revoke.add_argument("key_id")
    revoke.set_defaults(func=revoke_key)
    for parser in (create, listing, archive, kcreate, klist, revoke):
        add_connection_flags(parser)


def create_project(args: argparse.Namespace) -> int:
    project = connect(args).request("POST", "/v1/projects", json={"name": args.name})
    emit(project, PROJECT_COLUMNS, as_json=args.json)
    return 0


def list_projects(args: argparse.Namespace) -> int:
    params = {"include_archived": "true"} if args.all else {}
    rows = all_pages(connect(args), "/v1/projects", **params)
    emit(rows, PROJECT_COLUMNS, as_json=args.json)
    return 0


def archive_project(args: argparse.Namespace) -> int:
    project = connect(args).request("POST", f"/v1/projects/{args.id}/archive")
    emit(project, PROJECT_COLUMNS, as_json=args.json)
    return 0


def create_key(args: argparse.Namespace) -> int:
    key = connect(args).request(
        "POST", f"/v1/projects/{args.project}/api_keys", json={"name": args.name, "role": args.role}
    )
    if args.json:
        emit(key, [], as_json=True)
    else:
        emit(key, KEY_COLUMNS[:3], as_json=False)
        print(f"\nThe key (shown only now): {key.get('value')}")
    return 0


def list_keys(args: argparse.Namespace) -> int:
    rows = all_pages(connect(args), f"/v1/projects/{args.project}/api_keys")
    emit(rows, KEY_COLUMNS, as_json=args.json)
    return 0


def revoke_key(args: argparse.Namespace) -> int:
    deleted = connect(args).request("DELETE", f"/v1/projects/{args.project}/api_keys/{args.key_id}")
    emit(deleted, [("id", "id"), ("deleted", "deleted")], as_json=args.json)
    return 0
