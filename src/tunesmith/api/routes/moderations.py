"""``POST /v1/moderations`` (``client.moderations.create``): texts rated by the built-in content
filter, in OpenAI's moderation shape. Any project key may call it.

The body is read with a size cap (``api/body.py``); parsing and rating run in the threadpool
(``serving/moderation.py``).
"""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Depends

from tunesmith.api.body import ChatRoute, LimitedBody
from tunesmith.api.deps import Reader
from tunesmith.api.openapi import json_body
from tunesmith.protocol.moderations import ModerationCreateRequest, ModerationCreateResponse
from tunesmith.serving import moderation
from tunesmith.serving.safety import LexiconFilter

router = APIRouter(prefix="/v1/moderations", tags=["moderations"], route_class=ChatRoute)


@functools.cache
def built_in_filter() -> LexiconFilter:
    """The one built-in filter of the process (its rules compile on first use)."""
    return LexiconFilter()


@router.post(
    "", response_model=ModerationCreateResponse, openapi_extra=json_body(ModerationCreateRequest)
)
def create_moderation(
    _principal: Reader,
    body: LimitedBody,
    lexicon: Annotated[LexiconFilter, Depends(built_in_filter)],
) -> ModerationCreateResponse:
    return moderation.create_moderation(body, lexicon=lexicon)
