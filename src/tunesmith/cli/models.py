"""``tunesmith models list|show|rm|export``: base, fine-tuned and checkpoint models; and the
base-model catalog (``/v1/base_models``): ``models register|catalog|update|unregister``."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from tunesmith.cli.connection import CliError, Connection, add_connection_flags, connect
from tunesmith.cli.deployments import all_pages
from tunesmith.cli.output import emit, plain

COLUMNS = [
    ("id", "id"),
    ("kind", "kind"),
    ("base", "base_model"),
    ("job", "fine_tuning_job"),
    ("names", "registered_names"),
    ("created", "created"),
]
_CHECKPOINT = re.compile(r":(ckpt-step-\d+)$")
CATALOG_COLUMNS = [
    ("id", "id"),
    ("status", "status"),
    ("family", "family"),
    ("parameters", "parameters"),
    ("context", "context_length"),
    ("tasks", "tasks"),
    ("licence", "license"),
]
ENTRY_COLUMNS = [
    *CATALOG_COLUMNS,
    ("source", "source"),
    ("copied", "copied"),
    ("lora targets", "lora_target_modules"),
    ("lora lr", "lora_learning_rate"),
    ("full lr", "full_learning_rate"),
    ("servable", "servable"),
    ("error", "error.message"),
]


def register(sub: Any) -> None:
    models = sub.add_parser("models", help="list, show, delete and export models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="base models, then the project's own")
    listing.set_defaults(func=list_command)
    show = models_sub.add_parser("show", help="a model (an id or a registered name)")
    show.add_argument("id")
    show.set_defaults(func=show_command)
    rm = models_sub.add_parser("rm", help="delete a fine-tuned model or checkpoint")
    rm.add_argument("id")
    rm.set_defaults(func=rm_command)
    export = models_sub.add_parser(
        "export",
        help="write a fine-tuned model as a merged Hugging Face folder (on the server's machine)",
    )
    export.add_argument("id")
    export.add_argument("-o", "--output", required=True, help="the new folder")
    export.add_argument("--home", help="the server's data directory (TUNESMITH_HOME)")
    export.set_defaults(func=export_command)
    for parser in (listing, show, rm, export, *_register_catalog(models_sub)):
        add_connection_flags(parser)


def list_command(args: argparse.Namespace) -> int:
    emit(list(connect(args).openai().models.list()), COLUMNS, as_json=args.json)
    return 0


def show_command(args: argparse.Namespace) -> int:
    emit(connect(args).openai().models.retrieve(args.id), COLUMNS, as_json=args.json)
    return 0


def rm_command(args: argparse.Namespace) -> int:
    deleted = connect(args).openai().models.delete(args.id)
    emit(deleted, [("id", "id"), ("deleted", "deleted")], as_json=args.json)
    return 0


def model_folder(model: dict[str, Any], home: Path) -> Path:
    """Where the server keeps a fine-tuned model's or checkpoint's files under ``home``."""
    from tunesmith.settings import Settings

    settings = Settings(home=home)
    job = model.get("fine_tuning_job")
    kind = model.get("kind")
    if kind == "base" or not job:
        raise CliError(f"{model['id']} is a base model: there is nothing to merge; use it as is")
    if kind == "checkpoint":
        match = _CHECKPOINT.search(model["id"])
        if match is None:
            raise CliError(f"{model['id']}: cannot tell which checkpoint this is")
        return settings.job_dir(job) / "checkpoints" / match.group(1)
    return settings.fine_tuned_dir(job)


def export_command(args: argparse.Namespace) -> int:
    import os

    from tunesmith.training.checkpoint import MANIFEST, read_manifest

    model = plain(connect(args).openai().models.retrieve(args.id))
    home = Path(
        args.home or os.environ.get("TUNESMITH_HOME") or Path.home() / ".tunesmith"
    ).expanduser()
    folder = model_folder(model, home.resolve())
    if not (folder / MANIFEST).is_file():
        raise CliError(
            f"the files of {model['id']} are not on this machine (looked in {folder}); run "
            "`tunesmith models export` on the server's machine, with --home (or TUNESMITH_HOME) "
            "naming its data directory"
        )
    destination = Path(args.output)
    if destination.exists():
        raise CliError(f"{destination} already exists; choose a new folder")
    manifest = read_manifest(folder)
    base_dir = _base_dir(manifest, model, home)
    from tunesmith.training.export import export_merged

    export_merged(folder, destination, base_model_dir=base_dir)
    result = {"id": model["id"], "source": str(folder), "exported_to": str(destination)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"exported {model['id']} to {destination}")
    return 0


def _base_dir(manifest: dict[str, Any], model: dict[str, Any], home: Path) -> Path | None:
    """The base weights a LoRA checkpoint sits on: the manifest's folder, or (moved data) the
    catalog's copy of a known base model in this home's model cache."""
    if manifest.get("kind") == "full":
        return None
    recorded = manifest.get("base_model_path")
    if recorded and Path(recorded).is_dir():
        return None
    from tunesmith.catalog.models import materialize
    from tunesmith.catalog.spec import BUNDLED

    if model.get("base_model") == BUNDLED.id:
        return materialize(BUNDLED, home / "models")
    raise CliError(f"the base model of {model['id']} is not on this machine (looked in {recorded})")


# -- the base-model catalog (admin key to change it) ---------------------------------------------


def _register_catalog(models_sub: Any) -> list[argparse.ArgumentParser]:
    register_p = models_sub.add_parser(
        "register", help="add a base model to the catalog (admin key); waits until it is ready"
    )
    register_p.add_argument(
        "source", help="a model folder or .gguf file on the server, or org/name"
    )
    register_p.add_argument("--id", required=True, help="the model's id in the catalog")
    register_p.add_argument(
        "--copy", action="store_true", help="copy the files into the server's data directory"
    )
    register_p.add_argument("--no-wait", action="store_true", help="return while it registers")
    register_p.add_argument("--poll", type=float, default=0.5, help="seconds between checks")
    catalog = models_sub.add_parser(
        "catalog", help="the base models to fine-tune (or one of them, with its id)"
    )
    catalog.add_argument("id", nargs="?", help="show this base model in full")
    catalog.add_argument("--task", choices=["chat_completion", "text_generation"])
    catalog.set_defaults(func=catalog_command)
    update = models_sub.add_parser("update", help="change a registered base model (admin key)")
    update.add_argument("id")
    unregister = models_sub.add_parser(
        "unregister", help="remove a base model from the catalog (admin key)"
    )
    unregister.add_argument("id")
    unregister.set_defaults(func=unregister_command)
    for parser in (register_p, update):
        _field_flags(parser)
    register_p.set_defaults(func=register_command)
    update.set_defaults(func=update_command)
    return [register_p, catalog, update, unregister]


def _field_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        action="append",
        dest="tasks",
        choices=["chat_completion", "text_generation"],
        help="what it is fine-tuned for (repeat for both; default both)",
    )
    parser.add_argument("--context-length", type=int, help="the most tokens per example")
    parser.add_argument(
        "--lora-target-modules", help="layers LoRA adapts, comma-separated (default: the family's)"
    )
    parser.add_argument("--lora-learning-rate", type=float, help="base LoRA learning rate")
    parser.add_argument("--full-learning-rate", type=float, help="base full-training rate")
    parser.add_argument("--license", help="its licence identifier, e.g. apache-2.0")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    targets = args.lora_target_modules
    values = {
        "tasks": args.tasks,
        "context_length": args.context_length,
        "lora_target_modules": [t.strip() for t in targets.split(",")] if targets else None,
        "lora_learning_rate": args.lora_learning_rate,
        "full_learning_rate": args.full_learning_rate,
        "license": args.license,
    }
    return {name: value for name, value in values.items() if value is not None}


def register_command(args: argparse.Namespace) -> int:
    conn = connect(args)
    local = Path(args.source).expanduser()
    # The server reads the path on its machine, from its own working directory: a path that
    # exists here is sent absolute (the CLI usually runs on the server's machine).
    source = str(local.resolve()) if local.exists() else args.source
    body = {"id": args.id, "source": source, **_fields(args)}
    if args.copy:
        body["copy"] = True
    entry = conn.request("POST", "/v1/base_models", json=body)
    if not args.no_wait:
        entry = wait_registered(conn, entry, poll=args.poll)
    emit(entry, ENTRY_COLUMNS, as_json=args.json)
    return 0


def wait_registered(conn: Connection, entry: dict[str, Any], *, poll: float) -> dict[str, Any]:
    """Follows a registration to its end, printing each stage (and its bytes) to stderr; a failed
    one is a :class:`CliError` with the server's reason."""
    shown = None
    while entry["status"] == "registering":
        progress = entry.get("progress") or {}
        line = _progress_line(progress)
        if line != shown:
            print(f"{entry['id']}: {line}", file=sys.stderr)
            shown = line
        time.sleep(poll)
        entry = conn.request("GET", f"/v1/base_models/{entry['id']}")
    if entry["status"] == "failed":
        error = entry.get("error") or {}
        raise CliError(
            f"{entry['id']} failed to register: {error.get('code', 'error')}: "
            f"{error.get('message', 'no reason given')}"
        )
    print(f"{entry['id']}: ready", file=sys.stderr)
    return entry


def _progress_line(progress: dict[str, Any]) -> str:
    stage = progress.get("stage", "checking")
    total = progress.get("total_bytes") or 0
    if not total:
        return str(stage)
    done = progress.get("done_bytes") or 0
    return f"{stage} {done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total}%)"


def catalog_command(args: argparse.Namespace) -> int:
    conn = connect(args)
    if args.id:
        emit(conn.request("GET", f"/v1/base_models/{args.id}"), ENTRY_COLUMNS, as_json=args.json)
        return 0
    params = {"task": args.task} if args.task else {}
    emit(all_pages(conn, "/v1/base_models", **params), CATALOG_COLUMNS, as_json=args.json)
    return 0


def update_command(args: argparse.Namespace) -> int:
    changes = _fields(args)
    if not changes:
        raise CliError(
            "nothing to change: pass --task, --context-length, --lora-target-modules, "
            "--lora-learning-rate, --full-learning-rate or --license"
        )
    entry = connect(args).request("PATCH", f"/v1/base_models/{args.id}", json=changes)
    emit(entry, ENTRY_COLUMNS, as_json=args.json)
    return 0


def unregister_command(args: argparse.Namespace) -> int:
    deleted = connect(args).request("DELETE", f"/v1/base_models/{args.id}")
    emit(deleted, [("id", "id"), ("deleted", "deleted")], as_json=args.json)
    return 0
