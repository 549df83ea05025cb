"""Prefixed identifiers in OpenAI's style (``file-…``, ``upload_…``, ``proj_…``).

An id is its prefix, the creation time in microseconds (10 base-36 digits, so ids sort by age
under any collation) and 14 random base-62 characters (83 bits). Lists page by
``(created_at, id)``, so objects created within the same second still list in creation order.
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Literal

_TIME_DIGITS = string.digits + string.ascii_lowercase  # ASCII order == collation order
_RANDOM = string.ascii_letters + string.digits

Prefix = Literal[
    "file-",
    "upload_",
    "part_",
    "proj_",
    "key_",
    "ftjob-",
    "ftevent-",
    "ftckpt_",
    "wh_",
    "evt_",
    "whd_",
    "dep_",
    "depevt_",
    "chatcmpl-",
    "cmpl-",
    "modr-",
    "call_",
]


def _base36(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rest = divmod(value, 36)
        digits.append(_TIME_DIGITS[rest])
    return "".join(reversed(digits))


def new_id(prefix: Prefix) -> str:
    """``new_id("file-")`` -> ``"file-0ht3k9x2ab"`` + 14 random characters."""
    stamp = _base36(time.time_ns() // 1000, 10)
    return prefix + stamp + "".join(secrets.choice(_RANDOM) for _ in range(14))
