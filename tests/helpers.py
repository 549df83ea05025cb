"""Small builders for test data."""

from __future__ import annotations

import json
from typing import Any


def chat_example(i: int, *, system: bool = True) -> dict[str, Any]:
    messages = [
        {"role": "user", "content": f"What is {i} plus {i}?"},
        {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
    ]
    if system:
        messages.insert(0, {"role": "system", "content": "You answer arithmetic briefly."})
    return {"messages": messages}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def training_file(n: int = 12) -> bytes:
    return jsonl([chat_example(i) for i in range(n)])
