"""The ``tunesmith`` command.

``tunesmith serve`` runs the server (with a job worker inside); ``tunesmith worker`` runs one
more worker against the same database and data directory; ``tunesmith validate FILE`` checks a
training file locally with the same rules and tokenizer the server uses.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from tunesmith.cli.connection import CliError, error_message
from tunesmith.cli.output import fail
from tunesmith.data.issues import Issue

COMMAND_GROUPS: tuple[str, ...] = (
    "jobs",
    "data",
    "files",
    "models",
    "deployments",
    "usage",
    "chat",
    "admin",
)
"""Modules of ``tunesmith.cli`` that talk to a server; each adds its commands in ``register``."""


def _settings(args: argparse.Namespace) -> object:
    from tunesmith.settings import Settings

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    if getattr(args, "home", None):
        overrides["home"] = args.home
    if getattr(args, "slots", None) is not None:
        overrides["worker_slots"] = args.slots
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tunesmith.api.app import create_app
    from tunesmith.settings import Settings

    settings = _settings(args)
    assert isinstance(settings, Settings)
    app = create_app(settings)
    key = app.state.generated_admin_key
    if key:
        print(
            f"Generated the admin API key (shown once; also in {settings.admin_key_path()}):\n"
            f"  {key}\n",
            flush=True,
        )
    print(f"tunesmith: data in {settings.home}", flush=True)
    public = settings.resolved_public_base_url()
    print(f"tunesmith: portal at {public}/portal/", flush=True)
    if settings.public_base_url is None and settings.host in ("0.0.0.0", "::"):
        print(
            f"tunesmith: scoring URIs name {public}; set TUNESMITH_PUBLIC_BASE_URL to the "
            "address other machines reach this server at",
            flush=True,
        )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def worker(args: argparse.Namespace) -> int:
    from tunesmith.jobs.worker import run_worker_forever
    from tunesmith.sealing import installation_sealer
    from tunesmith.settings import Settings
    from tunesmith.store.db import make_engine, make_session_factory
    from tunesmith.store.migrate import upgrade_to_head

    settings = _settings(args)
    assert isinstance(settings, Settings)
    sealer = installation_sealer(settings)  # the migrations may seal deployment keys (0006)
    engine = make_engine(settings.resolved_database_url())
    upgrade_to_head(engine, sealer=sealer)
    print(f"tunesmith worker: data in {settings.home}, {settings.worker_slots} slot(s)", flush=True)
    run_worker_forever(settings, make_session_factory(engine))
    engine.dispose()
    return 0


def validate(args: argparse.Namespace) -> int:
    from tunesmith.data.jsonl import JsonlFormatError
    from tunesmith.settings import Settings
    from tunesmith.validation import FileValidator

    settings = _settings(args)
    assert isinstance(settings, Settings)
    try:
        report = FileValidator(settings)(Path(args.file))
    except JsonlFormatError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.valid else 1
    for issue in report.errors.items:
        print(f"error   {issue.code:<36} {issue.located()}")
    hidden = report.errors.total - len(report.errors.items)
    if hidden:
        print(f"... and {hidden} more errors")
    _print_warnings(report.warnings.items, report.warnings.total)
    stats = report.statistics or {}
    print(
        f"{report.n_examples} examples ({report.format}), {report.errors.total} errors, "
        f"{report.warnings.total} warnings; billable tokens {stats.get('billable_tokens')}, "
        f"auto epochs {stats.get('auto_n_epochs')}"
    )
    return 0 if report.valid else 1


def _print_warnings(warnings: list[Issue], total: int) -> None:
    """One line per warning code: how many, and the first lines it was seen on."""
    by_code: dict[str, list[Issue]] = {}
    for issue in warnings:
        by_code.setdefault(issue.code, []).append(issue)
    for code, issues in by_code.items():
        if len(issues) == 1:
            print(f"warning {code:<36} {issues[0].located()}")
            continue
        lines = ", ".join(str(i.line) for i in issues[:5]) + (", …" if len(issues) > 5 else "")
        print(f"warning {code:<36} {len(issues)}x (lines {lines}): {issues[0].message}")
    if total > len(warnings):
        print(f"... and {total - len(warnings)} more warnings")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake as one line (the usage block is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tunesmith: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tunesmith", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the API server")
    serve_p.add_argument("--host", help="address to bind (TUNESMITH_HOST, default 127.0.0.1)")
    serve_p.add_argument("--port", type=int, help="port (TUNESMITH_PORT, default 8000)")
    serve_p.add_argument("--home", help="data directory (TUNESMITH_HOME, default ~/.tunesmith)")
    serve_p.set_defaults(func=serve)
    worker_p = sub.add_parser("worker", help="run a job worker (more capacity, other machines)")
    worker_p.add_argument("--home", help="data directory (TUNESMITH_HOME), shared with the server")
    worker_p.add_argument("--slots", type=int, help="jobs run at once (TUNESMITH_WORKER_SLOTS)")
    worker_p.set_defaults(func=worker, host=None, port=None)
    val_p = sub.add_parser("validate", help="check a fine-tuning JSONL file locally")
    val_p.add_argument("file")
    val_p.add_argument("--json", action="store_true", help="print the full report as JSON")
    val_p.add_argument("--home", help="data directory holding the tokenizer cache")
    val_p.set_defaults(func=validate, host=None, port=None)
    for group in COMMAND_GROUPS:
        importlib.import_module(f"tunesmith.cli.{group}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # the server's own commands log what they do; a client command prints only its result
    level = logging.INFO if args.command in ("serve", "worker") else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = args.func(args)
    except ValidationError as exc:
        print(f"tunesmith: invalid setting: {exc}", file=sys.stderr)
        code = 2
    except CliError as exc:
        code = fail(str(exc))
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # the openai client's errors: one line, never a traceback
        message = _client_error(exc)
        if message is None:
            message = _startup_error(exc)
            if message is None:
                raise
            print(f"tunesmith: {message}", file=sys.stderr)
            code = 2
        else:
            code = fail(message)
    sys.exit(code)


def _startup_error(exc: Exception) -> str | None:
    """What stops ``serve`` or ``worker`` before they start: an unusable key-encryption key."""
    from tunesmith.sealing import KeyEncryptionKeyError

    return str(exc) if isinstance(exc, KeyEncryptionKeyError) else None


def _client_error(exc: Exception) -> str | None:
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the server at {exc.request.url.copy_with(path='/')} ({exc})"
    if isinstance(exc, openai.APIStatusError):  # ``body`` is the envelope's inner ``error``
        return error_message(exc.status_code, {"error": exc.body})
    return None
