"""``tunesmith models list|show|rm|export``: base, fine-tuned and checkpoint models."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from tunesmith.cli.connection import CliError, add_connection_flags, connect
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
    for parser in (listing, show, rm, export):
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
