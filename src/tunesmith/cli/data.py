"""``tunesmith data check``: the server's validation report for a training file, read in the
terminal, with no server; ``--split`` writes deterministic training and validation files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tunesmith.cli.connection import CliError


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="check and split training data locally (no server)")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="the validation report of a JSONL file")
    check.add_argument("file")
    check.add_argument(
        "--model",
        help="whose tokenizer and chat template count tokens: a Hugging Face folder, or "
        "SmolLM2-135M-Instruct (the bundled one; default, or TUNESMITH_VALIDATION_MODEL_DIR)",
    )
    check.add_argument("--split", type=float, help="hold out this share (0 < F <= 0.5)")
    check.add_argument("--out-dir", help="where --split writes train.jsonl and valid.jsonl")
    check.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    check.add_argument("--json", action="store_true", help="print the full report as JSON")
    check.add_argument("--home", help="data directory holding the tokenizer cache")
    check.set_defaults(func=check_command)


def check_command(args: argparse.Namespace) -> int:
    from tunesmith.data.jsonl import JsonlFormatError
    from tunesmith.validation import FileValidator

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if args.split is not None:
        _check_split_args(args)
    try:
        report = FileValidator(_settings(args))(path)
    except JsonlFormatError as exc:
        raise CliError(exc.message) from None
    result = report.to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    if not report.valid:
        return 1
    if args.split is not None:
        train, valid = split_file(path, Path(args.out_dir), args.split, args.seed)
        if not args.json:
            print(f"wrote {train[0]} ({train[1]} examples) and {valid[0]} ({valid[1]} examples)")
    return 0


def _settings(args: argparse.Namespace) -> Any:
    from tunesmith.catalog.bundled import BUNDLED_MODEL_ID
    from tunesmith.settings import Settings

    overrides: dict[str, Any] = {}
    if args.home:
        overrides["home"] = args.home
    model = args.model
    if model == BUNDLED_MODEL_ID:
        overrides["validation_model_dir"] = None
    elif model is not None:
        folder = Path(model).expanduser()
        if not (folder / "tokenizer_config.json").is_file():
            raise CliError(
                f"--model {model}: not a Hugging Face folder with a tokenizer; pass a folder, "
                f"or {BUNDLED_MODEL_ID} (the bundled model)"
            )
        overrides["validation_model_dir"] = folder.resolve()
    return Settings(**overrides)


def _check_split_args(args: argparse.Namespace) -> None:
    if not 0 < args.split <= 0.5:
        raise CliError(f"--split {args.split}: must be more than 0 and at most 0.5")
    if not args.out_dir:
        raise CliError("--split needs --out-dir (where train.jsonl and valid.jsonl go)")
    out = Path(args.out_dir)
    existing = [p for p in (out / "train.jsonl", out / "valid.jsonl") if p.exists()]
    if existing:
        raise CliError(f"{existing[0]} already exists; refusing to overwrite it")


def split_file(
    path: Path, out_dir: Path, share: float, seed: int
) -> tuple[tuple[Path, int], tuple[Path, int]]:
    """Copies each example line byte for byte (its line ending kept) into ``train.jsonl`` or
    ``valid.jsonl``: the examples a job with ``validation_split`` ``share`` and this seed holds
    out go to ``valid.jsonl`` (:mod:`tunesmith.data.split`); order is kept."""
    from tunesmith.data.jsonl import BOM
    from tunesmith.data.split import split_lines

    kept, held = split_lines(path, share, seed)
    if not kept:
        raise CliError(f"{len(held)} example(s) are too few to split")
    validation, examples = set(held), set(kept) | set(held)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, valid = out_dir / "train.jsonl", out_dir / "valid.jsonl"
    with path.open("rb") as source, train.open("xb") as t, valid.open("xb") as v:
        for number, line in enumerate(source, start=1):
            if number not in examples:
                continue  # a trailing blank line
            line = line.removeprefix(BOM) if number == 1 else line
            (v if number in validation else t).write(line if line.endswith(b"\n") else line + b"\n")
    return (train, len(kept)), (valid, len(held))


def _dist(d: Any) -> str:
    if not isinstance(d, dict):
        return "-"
    return "  ".join(
        f"{k} {d[k]:.4g}" if isinstance(d.get(k), float) else f"{k} {d.get(k)}"
        for k in ("min", "max", "mean", "median", "p5", "p95")
    )


def print_report(report: dict[str, Any]) -> None:
    """The report as readable lines: errors located, warnings grouped by code, statistics."""
    out = sys.stdout
    for issue in report["errors"]:
        print(f"error   {issue['code']:<36} {_located(issue)}", file=out)
    hidden = report["error_count"] - len(report["errors"])
    if hidden:
        print(f"... and {hidden} more errors", file=out)
    by_code: dict[str, list[dict[str, Any]]] = {}
    for issue in report["warnings"]:
        by_code.setdefault(issue["code"], []).append(issue)
    for code, issues in by_code.items():
        if len(issues) == 1:
            print(f"warning {code:<36} {_located(issues[0])}", file=out)
            continue
        shown = ", ".join(str(i.get("line")) for i in issues[:5]) + (
            ", …" if len(issues) > 5 else ""
        )
        print(f"warning {code:<36} {len(issues)}x (lines {shown}): {issues[0]['message']}")
    if report["warning_count"] > len(report["warnings"]):
        print(f"... and {report['warning_count'] - len(report['warnings'])} more warnings")
    stats = report.get("statistics") or {}
    if stats:
        context = report.get("context_length")
        print(f"tokenizer        {report.get('tokenizer')} (context length {context})")
        print(f"messages/example {_dist(stats.get('messages_per_example'))}")
        print(f"tokens/example   {_dist(stats.get('tokens_per_example'))}")
        print(f"assistant tokens {_dist(stats.get('assistant_tokens_per_example'))}")
        print(f"over context     {stats.get('examples_over_context_length')}")
        print(f"billable tokens  {stats.get('billable_tokens')}")
        print(f"auto epochs      {stats.get('auto_n_epochs')}")
        print(f"trained tokens   {stats.get('estimated_trained_tokens')} (estimated)")
    verdict = "valid" if report["valid"] else "INVALID"
    print(
        f"{report['n_examples']} examples ({report['format']}), {report['error_count']} errors, "
        f"{report['warning_count']} warnings: {verdict}"
    )


def _located(issue: dict[str, Any]) -> str:
    where = f"Line {issue['line']}" if issue.get("line") is not None else ""
    if issue.get("field"):
        where = f"{where}, {issue['field']}" if where else issue["field"]
    return f"{where}: {issue['message']}" if where else str(issue["message"])
