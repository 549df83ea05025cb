"""Prefixed random identifiers in OpenAI's style (``file-…``, ``upload_…``, ``proj_…``)."""

from __future__ import annotations

import secrets
import string
from typing import Literal

_ALPHABET = string.ascii_letters + string.digits

Prefix = Literal["file-", "upload_", "part_", "proj_", "key_", "ftjob-", "ftevent-", "ftckpt_"]


def new_id(prefix: Prefix, length: int = 24) -> str:
    """``new_id("file-")`` -> ``"file-3fQk…"``: 24 base62 characters, about 143 bits."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
