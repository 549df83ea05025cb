"""What a served model needs besides weights: its tokenizer, chat template, stop tokens and
context length — read from the model's own folder, so serving renders exactly as training did.

A fine-tuned model's folder holds the tokenizer and chat template it was trained with and a
``tunesmith.json`` manifest naming its end-of-turn token and context length; a base model's
folder holds its tokenizer and ``config.json``. :func:`load_assets` reads either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.chat_format import ChatFormat, TemplateError
from tunesmith.data.end_of_turn import generation_eos_ids
from tunesmith.errors import InvalidRequest
from tunesmith.serving.engine import ModelSource

MANIFEST = "tunesmith.json"  # training/checkpoint.py's manifest; read here without torch
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)


@dataclass(frozen=True, slots=True)
class ModelAssets:
    source: ModelSource
    tokenizer: Any
    chat: ChatFormat | None
    """None when the model has no chat template (text completions only)."""
    stop_ids: frozenset[int]
    context_length: int

    @property
    def decoder(self) -> Any:
        """What turns generated ids into text: the fast tokenizer itself (microseconds a call)
        unless the tokenizer cleans up spaces after decoding, which only its wrapper does."""
        if getattr(self.tokenizer, "clean_up_tokenization_spaces", False):
            return self.tokenizer
        return self.tokenizer.backend_tokenizer

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def chat_prompt(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        *,
        answer_prefix: str = "",
    ) -> list[int]:
        """The prompt tokens for a conversation: the chat template's text, tool calls written
        as training wrote them, encoded as training encodes (no extra special tokens), with
        ``answer_prefix`` (the opening of a forced tool call) as the answer's first text."""
        if self.chat is None:
            raise InvalidRequest(
                "This model has no chat template; call POST /v1/completions with a prompt.",
                param="model",
                code="chat_not_supported",
            )
        try:
            text = self.chat.prompt_text(messages, tools)
        except TemplateError as exc:
            where = "" if exc.message_index is None else f"messages[{exc.message_index}]: "
            raise InvalidRequest(
                f"{where}the model's chat template cannot render this conversation: {exc.message}",
                param="messages" if exc.message_index is None else f"messages[{exc.message_index}]",
            ) from None
        return self.encode(text + answer_prefix)


def load_assets(
    source: ModelSource, folder: Path, name: str, *, known: dict[str, ModelAssets]
) -> ModelAssets:
    """Reads the tokenizer and template in ``folder`` (the adapter's, the fine-tuned model's or
    the base model's) and the stop tokens of the model and its generation config.

    ``known`` maps fingerprints of tokenizer files to assets already loaded: the adapters of one
    base model carry identical tokenizers, and one copy (tens of MB for a 49k vocabulary) serves
    them all, so a deployment adds little more than its adapter's weights."""
    from transformers import AutoTokenizer

    manifest = _read_json(folder / MANIFEST)
    config = _read_json(source.weights / "config.json")
    context = int(manifest.get("context_length") or config["max_position_embeddings"])
    context = min(context, int(config["max_position_embeddings"]))
    generation = _read_json(source.weights / "generation_config.json").get("eos_token_id")
    eos_ids = generation_eos_ids(source.weights)  # the end-of-turn token is among them
    fingerprint = _fingerprint(folder, f"{context}\0{manifest.get('end_of_turn')}\0{generation}")
    twin = known.get(fingerprint)
    if twin is not None:
        return dataclasses.replace(twin, source=source)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    stops = {tokenizer.eos_token_id}
    if manifest.get("end_of_turn"):
        stops.add(tokenizer.convert_tokens_to_ids(manifest["end_of_turn"]))
    stops.update(generation if isinstance(generation, list) else [generation])
    chat = None
    if tokenizer.chat_template:
        chat = ChatFormat(tokenizer, context_length=context, name=name, eos_ids=eos_ids)
    assets = ModelAssets(
        source=source,
        tokenizer=tokenizer,
        chat=chat,
        stop_ids=frozenset(int(i) for i in stops if isinstance(i, int) and i >= 0),
        context_length=context,
    )
    known[fingerprint] = assets
    return assets


def _fingerprint(folder: Path, settings: str) -> str:
    """Identifies what rendering and stopping depend on: the tokenizer files with the template,
    and ``settings`` (context length, end-of-turn token, the generation config's eos ids)."""
    digest = hashlib.sha256(settings.encode())
    for name in TOKENIZER_FILES:
        path = folder / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"-"))
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    value: dict[str, Any] = json.loads(path.read_text())
    return value
