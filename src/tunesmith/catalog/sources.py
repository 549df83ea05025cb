"""Where a base model's weights come from, and what registering one checks about it.

A source is the bundled model, a local Hugging Face folder, a local GGUF file or a Hugging Face
Hub id. Registration inspects it *before* anything is stored, so a model that could never train
(no weights, no chat template, a template that never ends a turn with the tokenizer's end-of-turn
token, LoRA targets that name no layer) is refused with the field to fix, instead of failing in a
job hours later. The checks read headers and the tokenizer only, never the weights, so
registering takes well under a second for local sources.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunesmith.catalog.families import GGUF_ARCHITECTURES
from tunesmith.catalog.gguf_header import NotGguf, read_metadata
from tunesmith.catalog.spec import BUNDLED, BUNDLED_SOURCE, CHAT_COMPLETION
from tunesmith.data.end_of_turn import (
    answer_tail,
    end_of_turn_candidates,
    find_end_of_turn,
    generation_eos_ids,
)
from tunesmith.errors import InvalidRequest
from tunesmith.private_files import make_private, private_dir

SourceKind = Literal["bundled", "folder", "gguf", "hub"]

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

HUB_METADATA_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "chat_template*",
    "*.model",
    "vocab*",
    "merges.txt",
]
"""What a Hub model needs besides its weights: enough to check it at registration."""

HUB_MODEL_FILES = [*HUB_METADATA_FILES, "*.safetensors", "model.safetensors.index.json"]

MAX_CONFIG_BYTES = 1024 * 1024
"""A ``config.json`` is a few kilobytes; a larger one is not a model configuration."""


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """What registration learnt about a source."""

    source: str
    """Normalised: ``"bundled"``, an absolute path, or the hub id."""
    context_length: int | None
    """The model's own limit (``max_position_embeddings``, GGUF ``context_length``), if known."""
    layers: frozenset[str] | None
    """Names of the modules with 2-D weights (linear layers, embeddings), when readable."""
    config: dict[str, Any] | None = None
    """The ``config.json`` (for a GGUF file, its ``model_type`` alone, until conversion)."""


def source_kind(source: str) -> SourceKind:
    """The kind of a normalised source (as stored in the catalog)."""
    if source == BUNDLED_SOURCE:
        return "bundled"
    if os.path.isabs(source):
        return "gguf" if source.endswith(".gguf") else "folder"
    return "hub"


def _names_path(source: str) -> bool:
    path = Path(source).expanduser()
    return path.is_absolute() or path.exists() or source.startswith((".", "~"))


def names_hub(source: str) -> bool:
    """Whether a source as given (not yet normalised) is a hub id rather than a local path:
    it is shaped ``org/name`` and is not an existing path, nor one that starts like a path."""
    return not _names_path(source) and HUB_ID.match(source) is not None


def inspect_source(source: str, tasks: Sequence[str], *, cache_dir: Path) -> SourceFacts:
    """Checks ``source`` for ``tasks``; raises :class:`InvalidRequest` naming what to fix.

    A hub id's configuration and tokenizer (not its weights) are downloaded into the model cache.
    """
    if source == BUNDLED_SOURCE:
        return SourceFacts(BUNDLED_SOURCE, BUNDLED.context_length, None)
    if _names_path(source):
        path = Path(source).expanduser().resolve()
        if path.is_dir():
            return _inspect_folder(path, tasks, weights_required=True)
        if path.is_file():
            return _inspect_gguf(path, tasks)
        raise InvalidRequest(
            f"No file or folder at {path}: give the path of a Hugging Face model folder or of a "
            ".gguf file on this machine.",
            param="source",
        )
    if HUB_ID.match(source):
        return _inspect_hub(source, tasks, cache_dir)
    raise InvalidRequest(
        f"{source!r} is neither an existing path nor a Hugging Face Hub id like 'org/name': "
        "give an absolute path to a model folder or .gguf file.",
        param="source",
    )


# -- Hugging Face folders ------------------------------------------------------------------------


def _inspect_folder(folder: Path, tasks: Sequence[str], *, weights_required: bool) -> SourceFacts:
    config = _read_config(folder)
    layers = safetensors_layers(folder)
    if weights_required and layers is None:
        raise InvalidRequest(
            f"{folder} has no *.safetensors weights: save the model with "
            "`model.save_pretrained(folder)` (transformers writes safetensors) and register again.",
            param="source",
        )
    tokenizer = _load_tokenizer(folder)
    if CHAT_COMPLETION in tasks:
        _check_chat_template(tokenizer, folder)
    context = config.get("max_position_embeddings")
    return SourceFacts(
        str(folder), context if isinstance(context, int) and context > 0 else None, layers, config
    )


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise InvalidRequest(
            f"{folder} has no config.json, so it is not a Hugging Face model folder: register "
            "the folder that `save_pretrained` wrote, or a .gguf file.",
            param="source",
        )
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidRequest(
            f"{path} is larger than {MAX_CONFIG_BYTES} bytes, which no model configuration is: "
            "register the folder that `save_pretrained` wrote.",
            param="source",
        )
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}", param="source") from exc
    if not isinstance(config, dict):
        raise InvalidRequest(f"{path} does not hold a JSON object.", param="source")
    return config


def safetensors_layers(folder: Path) -> frozenset[str] | None:
    """Modules with a 2-D weight, read from the safetensors headers (no tensor is loaded)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    layers: set[str] = set()
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name.endswith(".weight") and len(entry.get("shape", ())) == 2:
                layers.add(name.removesuffix(".weight"))
    return frozenset(layers)


def safetensors_parameters(folder: Path) -> int | None:
    """The number of weights in the folder's safetensors files, summed from their headers' tensor
    shapes (no tensor is loaded); None when the folder has none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                total += math.prod(int(n) for n in entry.get("shape", ()))
    return total


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
        raise InvalidRequest(
            f"The tokenizer in {folder} cannot be loaded ({exc}); save it into the folder with "
            "`tokenizer.save_pretrained(folder)`.",
            param="source",
        ) from exc
    if not tokenizer.eos_token:
        raise InvalidRequest(
            f"The tokenizer in {folder} has no eos token, so a trained model would never learn "
            "to stop: set eos_token in its tokenizer_config.json.",
            param="source",
        )
    return tokenizer


def _check_chat_template(tokenizer: Any, folder: Path) -> None:
    """The template exists and ends an assistant turn with an end-of-turn token (the tokenizer's
    eos token or one of ``generation_config.json``'s eos ids), which training puts inside the
    loss and serving stops at."""
    fix = "or register the model with tasks ['text_generation']."
    if not tokenizer.chat_template:
        raise InvalidRequest(
            f"The tokenizer in {folder} has no chat template, so the model cannot be registered "
            f"for chat_completion: add a chat_template.jinja (or tokenizer_config.json "
            f"chat_template) to the folder, {fix}",
            param="tasks",
        )
    eos_ids = generation_eos_ids(folder)
    try:
        tail = answer_tail(tokenizer)
        found = find_end_of_turn(tokenizer, eos_ids)
    except Exception as exc:  # Jinja raises anything
        raise InvalidRequest(
            f"The chat template in {folder} cannot render a user turn and an assistant turn "
            f"({exc}): fix the template, {fix}",
            param="tasks",
        ) from exc
    if found is None:
        candidates = ", ".join(repr(t) for t in end_of_turn_candidates(tokenizer, eos_ids))
        after = "drops the answer" if tail is None else f"writes {tail[:40]!r} after an answer"
        raise InvalidRequest(
            f"The chat template in {folder} {after}, with none of the model's end-of-turn "
            f"candidates ({candidates}: the tokenizer's eos token and generation_config.json's "
            "eos_token_id) in it, so a model trained on it would not learn to stop: name the "
            "token the template writes after an answer as eos_token in tokenizer_config.json "
            f"or add its id to eos_token_id in generation_config.json, {fix}",
            param="tasks",
        )


# -- GGUF files ----------------------------------------------------------------------------------


def _inspect_gguf(path: Path, tasks: Sequence[str]) -> SourceFacts:
    if path.suffix != ".gguf":
        raise InvalidRequest(
            f"{path} is a file but not a .gguf file: register a GGUF file or a Hugging Face "
            "model folder.",
            param="source",
        )
    try:
        metadata = read_metadata(path)
    except (NotGguf, OSError) as exc:
        raise InvalidRequest(f"{path} cannot be read as GGUF: {exc}.", param="source") from exc
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise InvalidRequest(f"{path} names no general.architecture.", param="source")
    _check_gguf_architecture(architecture, path)
    if CHAT_COMPLETION in tasks and not metadata.get("tokenizer.chat_template"):
        raise InvalidRequest(
            f"{path} has no tokenizer.chat_template, so the model cannot be registered for "
            "chat_completion: register it with tasks ['text_generation'], or convert it to a "
            "Hugging Face folder and add a chat template.",
            param="tasks",
        )
    context = metadata.get(f"{architecture}.context_length")
    config = {"model_type": GGUF_ARCHITECTURES.get(architecture, architecture)}
    return SourceFacts(
        str(path), context if isinstance(context, int) and context > 0 else None, None, config
    )


def _check_gguf_architecture(architecture: str, path: Path) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = {architecture, architecture.replace("moe", "_moe"), architecture.replace("-", "_")}
    if not names & set(GGUF_SUPPORTED_ARCHITECTURES):
        raise InvalidRequest(
            f"{path} holds a {architecture!r} model, which transformers cannot load from GGUF "
            f"(it loads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}): register the model's "
            "Hugging Face folder instead.",
            param="source",
        )


# -- Hugging Face Hub ----------------------------------------------------------------------------


def hub_snapshot(repo_id: str, cache_dir: Path, patterns: list[str]) -> Path:
    """The local snapshot of ``repo_id`` with the files matching ``patterns``, downloaded into
    ``cache_dir/hub`` (huggingface_hub's own cache layout, safe for concurrent downloads)."""
    from huggingface_hub import snapshot_download

    hub = private_dir(cache_dir / "hub")
    folder = snapshot_download(repo_id, cache_dir=hub, allow_patterns=patterns)
    make_private(hub, flush=False)  # huggingface_hub leaves its files to the umask
    if not isinstance(folder, str):  # only a dry run answers with a file list
        raise TypeError(f"snapshot_download returned {type(folder).__name__}")
    return Path(folder)


def _inspect_hub(repo_id: str, tasks: Sequence[str], cache_dir: Path) -> SourceFacts:
    try:
        folder = hub_snapshot(repo_id, cache_dir, HUB_METADATA_FILES)
    except Exception as exc:  # network, authentication, missing repository, ...
        raise InvalidRequest(
            f"Could not fetch {repo_id} from the Hugging Face Hub ({exc}). If this machine has "
            "no network, download the model elsewhere and register its folder by path.",
            param="source",
        ) from exc
    facts = _inspect_folder(folder, tasks, weights_required=False)
    return SourceFacts(repo_id, facts.context_length, None, facts.config)
