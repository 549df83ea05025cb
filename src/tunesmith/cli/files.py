"""``tunesmith files upload|list|show|rm``: training files, through the official client."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tunesmith.cli.connection import CliError, add_connection_flags, connect
from tunesmith.cli.output import emit, plain

COLUMNS = [
    ("id", "id"),
    ("filename", "filename"),
    ("purpose", "purpose"),
    ("bytes", "bytes"),
    ("status", "status"),
    ("created", "created_at"),
]


def register(sub: Any) -> None:
    files = sub.add_parser("files", help="upload, list, show and delete files")
    files_sub = files.add_subparsers(dest="files_command", required=True)
    upload = files_sub.add_parser("upload", help="upload a file (checked at once)")
    upload.add_argument("path")
    upload.add_argument("--purpose", default="fine-tune", help="default fine-tune")
    upload.set_defaults(func=upload_command)
    listing = files_sub.add_parser("list", help="the project's files, newest first")
    listing.add_argument("--purpose", help="only files of this purpose")
    listing.set_defaults(func=list_command)
    show = files_sub.add_parser("show", help="a file and its validation summary")
    show.add_argument("id")
    show.set_defaults(func=show_command)
    rm = files_sub.add_parser("rm", help="delete a file")
    rm.add_argument("id")
    rm.set_defaults(func=rm_command)
    for parser in (upload, listing, show, rm):
        add_connection_flags(parser)


def upload_command(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    conn = connect(args)
    with path.open("rb") as handle:
        uploaded = conn.openai().files.create(file=handle, purpose=args.purpose)
    data = plain(uploaded)
    report = None
    if data.get("status") == "error":
        report = conn.request("GET", f"/v1/files/{data['id']}/validation")
    if args.json:
        print(json.dumps({**data, "validation": report} if report else data, indent=2))
    else:
        print(f"{data['id']}  {data['status']}  {data['filename']}  {data['bytes']} bytes")
        if report:
            _print_errors(report, limit=5)
    return 1 if data.get("status") == "error" else 0


def _print_errors(report: dict[str, Any], *, limit: int) -> None:
    from tunesmith.cli.data import _located

    for issue in report.get("errors", [])[:limit]:
        print(f"error   {issue['code']:<36} {_located(issue)}")
    more = int(report.get("error_count", 0)) - min(limit, len(report.get("errors", [])))
    if more > 0:
        print(f"... and {more} more errors")


def list_command(args: argparse.Namespace) -> int:
    client = connect(args).openai()
    kwargs = {"purpose": args.purpose} if args.purpose else {}
    files = list(client.files.list(**kwargs))
    emit(files, COLUMNS, as_json=args.json)
    return 0


def show_command(args: argparse.Namespace) -> int:
    conn = connect(args)
    data = plain(conn.openai().files.retrieve(args.id))
    report = None
    if data.get("purpose") == "fine-tune":
        report = conn.request("GET", f"/v1/files/{args.id}/validation")
    if args.json:
        print(json.dumps({**data, "validation": report}, indent=2))
        return 0
    emit(data, COLUMNS, as_json=False)
    if report:
        stats = report.get("statistics") or {}
        print(
            f"validation: {report.get('n_examples')} examples ({report.get('format')}), "
            f"{report.get('error_count')} errors, {report.get('warning_count')} warnings; "
            f"billable tokens {stats.get('billable_tokens')}, "
            f"auto epochs {stats.get('auto_n_epochs')}"
        )
        _print_errors(report, limit=5)
    elif data.get("status_details"):
        print(f"details: {data['status_details']}")
    return 0


def rm_command(args: argparse.Namespace) -> int:
    deleted = connect(args).openai().files.delete(args.id)
    emit(deleted, [("id", "id"), ("deleted", "deleted")], as_json=args.json)
    return 0
