"""``tunesmith jobs …``: fine-tuning jobs from the terminal, through the official ``openai``
client: create (from flags or an Azure ML job YAML), list, show, events, follow (a live progress
line), cancel, pause, resume, and plot (loss and token accuracy against step, with matplotlib).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tunesmith.cli.azure_yaml import AzureYamlError, DataRef, parse_job_yaml
from tunesmith.cli.connection import CliError, add_connection_flags, connect
from tunesmith.cli.output import Column, emit, plain

FINAL = frozenset({"succeeded", "failed", "cancelled"})
JOB_COLUMNS: list[Column] = [
    ("id", "id"),
    ("model", "model"),
    ("status", "status"),
    ("step", "step"),
    ("of", "total_steps"),
    ("fine-tuned model", "fine_tuned_model"),
    ("created", "created_at"),
]
SHOW_COLUMNS: list[Column] = [
    *JOB_COLUMNS,
    ("trained tokens", "trained_tokens"),
    ("error", "error.message"),
]
EVENT_COLUMNS: list[Column] = [
    ("created", "created_at"),
    ("level", "level"),
    ("type", "type"),
    ("message", "message"),
]
LOSS_SERIES = (
    ("train_loss", "train loss"),
    ("valid_loss", "validation loss"),
    ("full_valid_loss", "full validation loss"),
)
ACCURACY_SERIES = (
    ("train_mean_token_accuracy", "train"),
    ("valid_mean_token_accuracy", "validation"),
    ("full_valid_mean_token_accuracy", "full validation"),
)


def register(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="fine-tuning jobs: create, follow, plot, …")
    commands = jobs.add_subparsers(dest="jobs_command", required=True)

    create = commands.add_parser("create", help="start a fine-tuning job (flags or -f job.yml)")
    create.add_argument("-f", "--file", dest="yaml", help="an Azure ML fine-tuning job YAML")
    create.add_argument("--model", help="the base (or fine-tuned) model to train")
    create.add_argument("--training-file", help="a file id, or a local JSONL file to upload")
    validation = create.add_mutually_exclusive_group()
    validation.add_argument("--validation-file", help="a file id, or a local JSONL file")
    validation.add_argument(
        "--validation-split", type=float, metavar="F", help="hold out this share for validation"
    )
    create.add_argument("--suffix", help="added to the fine-tuned model's name")
    create.add_argument("--epochs", type=_int_or_auto, help='n_epochs (or "auto")')
    create.add_argument("--batch-size", type=_int_or_auto, help='batch_size (or "auto")')
    create.add_argument(
        "--lr-multiplier", type=_float_or_auto, help='learning_rate_multiplier (or "auto")'
    )
    create.add_argument("--seed", type=int)
    create.add_argument("--lora-rank", type=int)
    create.add_argument("--strategy", choices=("lora", "full"))
    create.add_argument(
        "--metadata", action="append", metavar="KEY=VALUE", help="job metadata (repeatable)"
    )
    create.add_argument("--follow", action="store_true", help="show progress until the job ends")
    _poll_flag(create)
    create.set_defaults(func=create_job)

    list_p = commands.add_parser("list", help="the newest jobs")
    list_p.add_argument("--limit", type=int, default=20)
    list_p.set_defaults(func=list_jobs)

    show = commands.add_parser("show", help="one job")
    show.add_argument("job_id")
    show.set_defaults(func=show_job)

    events = commands.add_parser("events", help="a job's events, oldest first")
    events.add_argument("job_id")
    events.add_argument("--limit", type=int, help="only the newest N")
    events.set_defaults(func=job_events)

    for name, verb in (("cancel", "cancel"), ("pause", "pause"), ("resume", "resume")):
        p = commands.add_parser(name, help=f"{verb} a job")
        p.add_argument("job_id")
        p.set_defaults(func=change_job, action=name)

    follow = commands.add_parser("follow", help="live progress until the job ends")
    follow.add_argument("job_id")
    _poll_flag(follow)
    follow.set_defaults(func=follow_job)

    plot = commands.add_parser("plot", help="draw loss and token accuracy to a PNG")
    plot.add_argument("job_id")
    plot.add_argument("-o", "--output", default="loss.png", help="the image to write")
    plot.set_defaults(func=plot_job)

    for parser in commands.choices.values():
        add_connection_flags(parser)


def _poll_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between checks")


def _int_or_auto(text: str) -> int | str:
    return "auto" if text == "auto" else int(text)


def _float_or_auto(text: str) -> float | str:
    return "auto" if text == "auto" else float(text)


# --- create -----------------------------------------------------------------------------------


def create_job(args: argparse.Namespace) -> int:
    client = connect(args).openai()
    job = _create_from_yaml(client, args) if args.yaml else _create_from_flags(client, args)
    if args.follow and not args.json:
        # stdout is kept for the fine-tuned model's name: MODEL=$(tunesmith jobs create … --follow)
        print(f"created {job.id} ({job.status})", file=sys.stderr, flush=True)
        return follow(client, job.id, args.poll)
    emit(job, SHOW_COLUMNS, as_json=args.json)
    sys.stdout.flush()
    if args.follow:
        return follow(client, job.id, args.poll)
    return 0


def _create_from_flags(client: Any, args: argparse.Namespace) -> Any:
    if not args.model or not args.training_file:
        raise CliError("jobs create needs --model and --training-file (or -f job.yml)")
    hyperparameters = {
        name: value
        for name, value in (
            ("n_epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("learning_rate_multiplier", args.lr_multiplier),
            ("lora_rank", args.lora_rank),
            ("strategy", args.strategy),
        )
        if value is not None
    }
    fields: dict[str, Any] = {
        "model": args.model,
        "training_file": _file(client, args.training_file),
    }
    if args.validation_file:
        fields["validation_file"] = _file(client, args.validation_file)
    if args.suffix:
        fields["suffix"] = args.suffix
    if args.seed is not None:
        fields["seed"] = args.seed
    if args.metadata:
        fields["metadata"] = _pairs(args.metadata)
    if hyperparameters:
        fields["method"] = _method(hyperparameters)
    if args.validation_split is not None:
        fields["extra_body"] = {"validation_split": args.validation_split}
    return client.fine_tuning.jobs.create(**fields)


def _create_from_yaml(client: Any, args: argparse.Namespace) -> Any:
    flags = {
        "--model": args.model,
        "--training-file": args.training_file,
        "--validation-file": args.validation_file,
        "--validation-split": args.validation_split,
        "--epochs": args.epochs,
        "--batch-size": args.batch_size,
        "--lr-multiplier": args.lr_multiplier,
        "--seed": args.seed,
        "--lora-rank": args.lora_rank,
        "--strategy": args.strategy,
        "--metadata": args.metadata,
    }
    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise CliError(
            f"-f takes the whole job from the YAML; leave out {', '.join(given)} "
            "(only --suffix and --follow go with it)"
        )
    path = Path(args.yaml)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        spec = parse_job_yaml(text, path.resolve().parent)
    except AzureYamlError as exc:
        raise CliError(f"{path}: {exc}") from None
    _check_model(client, spec.model, path)
    fields: dict[str, Any] = {
        "model": spec.model,
        "training_file": _data_file(client, spec.training_data),
    }
    if spec.validation_data is not None:
        fields["validation_file"] = _data_file(client, spec.validation_data)
    # the model's name carries the registered name unless --suffix says otherwise
    suffix = args.suffix or spec.registered_name
    if suffix:
        fields["suffix"] = suffix
    if spec.seed is not None:
        fields["seed"] = spec.seed
    if spec.metadata:
        fields["metadata"] = spec.metadata
    if spec.hyperparameters:
        fields["method"] = _method(spec.hyperparameters)
    extra: dict[str, Any] = {}
    if spec.registered_name:
        extra["registered_model"] = {"name": spec.registered_name}
    if spec.priority is not None:
        extra["priority"] = spec.priority
    if extra:
        fields["extra_body"] = extra
    job = client.fine_tuning.jobs.create(**fields)
    if spec.no_effect:
        keys = ", ".join(f"{key} ({why})" for key, why in spec.no_effect)
        print(f"tunesmith: accepted, has no effect here: {keys}", file=sys.stderr)
    if spec.unrecorded:
        print(
            f"tunesmith: not kept in the job's metadata (it holds 16 pairs, properties and tags "
            f"first): {', '.join(spec.unrecorded)}",
            file=sys.stderr,
        )
    return job


def _check_model(client: Any, model: str, path: Path) -> None:
    """A clear line, listing the base models, when the server does not know ``model``."""
    models = [plain(m) for m in client.models.list()]
    known: set[str] = set()
    for m in models:
        known.add(m["id"])
        known.update(m.get("registered_names") or [])
    if model in known or (model.count(":") == 1 and model.split(":")[0] in known):
        return
    bases = sorted(m["id"] for m in models if m.get("kind", "base") == "base")
    hint = " (Azure ML registry models are not available here)" if "azureml:" in model else ""
    raise CliError(
        f"{path}: model.path {model!r} is not a model of this server{hint}; the available "
        f"base models are: {', '.join(bases) or '(none)'}"
    )


def _method(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


def _pairs(items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--metadata takes KEY=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


def _file(client: Any, value: str) -> str:
    """A file id as is; a local file uploaded first (purpose fine-tune)."""
    local = Path(value).expanduser()
    if local.is_file():
        return _upload(client, local)
    if value.startswith("file-"):
        return value
    raise CliError(f"no such file: {value} (neither a local file nor a file id)")


def _data_file(client: Any, ref: DataRef) -> str:
    if ref.path is not None:
        return _upload(client, ref.path)
    assert ref.file_id is not None
    return ref.file_id


def _upload(client: Any, path: Path) -> str:
    uploaded = client.files.create(file=(path.name, path.read_bytes()), purpose="fine-tune")
    print(f"tunesmith: uploaded {path} as {uploaded.id}", file=sys.stderr)
    return str(uploaded.id)


# --- list, show, events, cancel / pause / resume ----------------------------------------------


def list_jobs(args: argparse.Namespace) -> int:
    page = connect(args).openai().fine_tuning.jobs.list(limit=args.limit)
    emit(list(page.data), JOB_COLUMNS, as_json=args.json)
    return 0


def show_job(args: argparse.Namespace) -> int:
    job = connect(args).openai().fine_tuning.jobs.retrieve(args.job_id)
    emit(job, SHOW_COLUMNS, as_json=args.json)
    return 0


def job_events(args: argparse.Namespace) -> int:
    client = connect(args).openai()
    events = _events(client, args.job_id, args.limit)
    emit(events, EVENT_COLUMNS, as_json=args.json)
    return 0


def _events(client: Any, job_id: str, limit: int | None = None) -> list[Any]:
    """The job's events, oldest first: all of them, or the newest ``limit``."""
    newest_first: list[Any] = []
    after = None
    while limit is None or len(newest_first) < limit:
        size = 100 if limit is None else min(100, limit - len(newest_first))
        page = client.fine_tuning.jobs.list_events(job_id, limit=size, after=after)
        newest_first.extend(page.data)
        if not page.has_more or not page.data:
            break
        after = page.data[-1].id
    return list(reversed(newest_first))


def change_job(args: argparse.Namespace) -> int:
    jobs = connect(args).openai().fine_tuning.jobs
    job = getattr(jobs, args.action)(args.job_id)
    emit(job, SHOW_COLUMNS, as_json=args.json)
    return 0


# --- follow -----------------------------------------------------------------------------------


def follow_job(args: argparse.Namespace) -> int:
    return follow(connect(args).openai(), args.job_id, args.poll)


def follow(client: Any, job_id: str, poll: float, stream: TextIO | None = None) -> int:
    """Shows the job's progress on ``stream`` (stderr) until it ends: redrawn in place on a
    terminal, one line per change otherwise. Prints the fine-tuned model's name on success;
    a failed or cancelled job is a :class:`CliError`."""
    out = stream if stream is not None else sys.stderr
    tty = out.isatty()
    shown = None
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        page = client.fine_tuning.jobs.list_events(job_id, limit=20)
        metrics = next((e.data for e in page.data if e.type == "metrics" and e.data), None)
        line = progress_line(job.status, metrics, bar=tty)
        if line != shown:
            out.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
            out.flush()
            shown = line
        if job.status in FINAL:
            break
        time.sleep(poll)
    if tty:
        out.write("\n")
        out.flush()
    if job.status == "succeeded":
        print(job.fine_tuned_model)
        return 0
    if job.status == "failed":
        error = job.error
        detail = f"{error.code}: {error.message}" if error and error.message else "no details"
        raise CliError(f"job {job_id} failed: {detail}")
    raise CliError(f"job {job_id} was cancelled")


def progress_line(status: str, data: Any, *, bar: bool = False) -> str:
    """``step 3/30  loss 1.2345  acc 0.612  812 tok/s  ETA 0:42  running``."""
    if not isinstance(data, dict) or "step" not in data:
        return status
    step, total = data.get("step"), data.get("total_steps")
    parts = [f"step {step}/{total}"]
    if bar and isinstance(step, int) and isinstance(total, int) and total > 0:
        filled = round(20 * min(step, total) / total)
        parts.insert(0, "[" + "#" * filled + "-" * (20 - filled) + "]")
    for key, label, fmt in (
        ("train_loss", "loss", ".4f"),
        ("valid_loss", "valid loss", ".4f"),
        ("train_mean_token_accuracy", "acc", ".3f"),
        ("tokens_per_second", "tok/s", ",.0f"),
    ):
        value = data.get(key)
        if isinstance(value, int | float):
            parts.append(f"{value:{fmt}} tok/s" if label == "tok/s" else f"{label} {value:{fmt}}")
    eta = data.get("eta_seconds")
    if isinstance(eta, int | float) and status not in FINAL:
        parts.append(f"ETA {_duration(eta)}")
    parts.append(status)
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --- plot -------------------------------------------------------------------------------------


def plot_job(args: argparse.Namespace) -> int:
    client = connect(args).openai()
    job = client.fine_tuning.jobs.retrieve(args.job_id)
    rows = _results_rows(client, job) if job.result_files else _event_rows(client, job.id)
    if not rows:
        raise CliError(f"job {job.id} has no metrics yet (status {job.status}); nothing to plot")
    out = Path(args.output)
    draw(rows, out, title=f"{job.id} ({job.model})")
    print(f"wrote {out}")
    return 0


def _results_rows(client: Any, job: Any) -> list[dict[str, float | None]]:
    text = client.files.content(job.result_files[0]).text
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        rows.append({key: _number(value) for key, value in record.items() if key})
    return [r for r in rows if r.get("step") is not None]


def _event_rows(client: Any, job_id: str) -> list[dict[str, float | None]]:
    by_step: dict[float, dict[str, float | None]] = {}
    for event in _events(client, job_id):
        data = event.data
        if event.type == "metrics" and isinstance(data, dict) and "step" in data:
            by_step[data["step"]] = {k: _number(v) for k, v in data.items()}
    return [by_step[step] for step in sorted(by_step)]


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return None
    return None


def draw(rows: list[dict[str, float | None]], out: Path, *, title: str) -> None:
    """Loss (top) and token accuracy (bottom) against step, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for ax, series, label in (
        (loss_ax, LOSS_SERIES, "loss"),
        (acc_ax, ACCURACY_SERIES, "token accuracy"),
    ):
        for key, name in series:
            points = [(r["step"], r.get(key)) for r in rows if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                sparse = len(points) < len(rows) / 2
                ax.plot(xs, ys, label=name, marker="o" if sparse else None)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    acc_ax.set_xlabel("step")
    loss_ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
