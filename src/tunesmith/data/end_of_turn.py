"""Which token ends an assistant turn: the one training puts inside the loss, registration
requires and serving stops at.

A tokenizer's eos token is not always it. Phi-3's eos is ``<|endoftext|>`` but its turns end
with ``<|end|>``; Gemma's eos is ``<eos>`` but its turns end with ``<end_of_turn>``; Llama 3's
first tokenizer configs say ``<|end_of_text|>`` where its turns end with ``<|eot_id|>``. Such
models list every token generation should stop at in ``generation_config.json``'s
``eos_token_id``. :func:`find_end_of_turn` renders a probe answer with the chat template and
takes, among the tokenizer's eos token and those ids, the one the template writes first after
the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PROBE_ANSWER = "tunesmith-probe-answer"
PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": PROBE_ANSWER}]
"""The conversation :func:`find_end_of_turn` renders: one user turn and one answer."""

GENERATION_CONFIG = "generation_config.json"


def generation_eos_ids(folder: Path) -> tuple[int, ...]:
    """The ``eos_token_id`` of a model folder's ``generation_config.json`` (one id or a list);
    empty when the file is missing, unreadable or names none."""
    try:
        value = json.loads((folder / GENERATION_CONFIG).read_text()).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        return ()
    ids = value if isinstance(value, list) else [value]
    return tuple(i for i in ids if isinstance(i, int) and not isinstance(i, bool) and i >= 0)


def end_of_turn_candidates(tokenizer: Any, eos_ids: Iterable[int] = ()) -> list[str]:
    """The tokenizer's eos token, then the tokens of ``eos_ids`` (duplicates left out)."""
    tokens = [str(tokenizer.eos_token)] if tokenizer.eos_token else []
    for token_id in eos_ids:
        token = tokenizer.convert_ids_to_tokens(int(token_id))
        if isinstance(token, str) and token and token not in tokens:
            tokens.append(token)
    return tokens


def answer_tail(tokenizer: Any) -> str | None:
    """What the chat template writes after the probe answer, or None when it drops the answer.

    Raises whatever the template raises when it cannot render :data:`PROBE`."""
    text = str(tokenizer.apply_chat_template(PROBE, tokenize=False))
    at = text.rfind(PROBE_ANSWER)
    return None if at < 0 else text[at + len(PROBE_ANSWER) :]


def find_end_of_turn(tokenizer: Any, eos_ids: Sequence[int] = ()) -> str | None:
    """The end-of-turn token: of :func:`end_of_turn_candidates`, the one the template writes
    first after an answer; None when the template writes none of them there.

    Raises whatever the template raises when it cannot render :data:`PROBE`."""
    tail = answer_tail(tokenizer)
    if tail is None:
        return None
    found = [
        (tail.find(token), -len(token), token)
        for token in end_of_turn_candidates(tokenizer, eos_ids)
        if token in tail
    ]
    return min(found)[2] if found else None
