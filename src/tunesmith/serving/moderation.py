"""``POST /v1/moderations``: texts rated by the built-in ``LexiconFilter``, answered in
OpenAI's moderation shape (``protocol/moderations.py``).

The endpoint always uses the built-in filter, also when deployments use a moderation endpoint
(``TUNESMITH_MODERATION_URL``): it is the rating tunesmith itself gives. Each hit of the
lexicon fills OpenAI's key for its category, and its subcategory key by its aspect
(``self_harm`` + ``intent`` -> ``self-harm`` and ``self-harm/intent``). A key's score is its
worst hit's severity as a number (``SCORES``); a key is flagged when that severity reaches the
filter's threshold, so ``flagged`` agrees with ``LexiconFilter.check(text).filtered``.
"""

from __future__ import annotations

import json
from typing import Final

from pydantic import ValidationError

from tunesmith.errors import InvalidRequest
from tunesmith.ids import new_id
from tunesmith.protocol.moderations import (
    CATEGORY_KEYS,
    ImageInput,
    Moderation,
    ModerationCreateRequest,
    ModerationCreateResponse,
    TextInput,
)
from tunesmith.serving.lexicon import LEXICON_VERSION, SEVERITIES, Aspect, Category, Severity
from tunesmith.serving.safety import LexiconFilter

MODEL: Final = f"tunesmith-moderation-{LEXICON_VERSION}"

SCORES: Final[dict[Severity, float]] = {"safe": 0.0, "low": 0.3, "medium": 0.6, "high": 0.9}
"""A severity as OpenAI's score from 0 to 1; each falls in its own band of
``safety.SCORE_BANDS``, so a moderation answer read back by ``RemoteModerationFilter`` gives the
same severities."""

KEYS: Final[dict[tuple[Category, Aspect | None], tuple[str, ...]]] = {
    ("hate", None): ("hate",),
    ("hate", "threat"): ("hate", "hate/threatening"),
    ("hate", "harassment"): ("harassment",),
    ("sexual", None): ("sexual",),
    ("sexual", "minors"): ("sexual", "sexual/minors"),
    ("violence", None): ("violence",),
    ("violence", "graphic"): ("violence", "violence/graphic"),
    ("violence", "threat"): ("violence", "harassment/threatening"),
    ("violence", "instructions"): ("violence", "illicit", "illicit/violent"),
    ("self_harm", None): ("self-harm",),
    ("self_harm", "intent"): ("self-harm", "self-harm/intent"),
    ("self_harm", "instructions"): ("self-harm", "self-harm/instructions"),
}
"""The OpenAI keys a hit of (category, aspect) fills; every label the lexicon uses is here."""

_INPUT_SHAPES = (
    'input must be a string, a list of strings, or a list of {"type": "text", "text": "..."} '
    "objects"
)


def parse_request(body: bytes) -> ModerationCreateRequest:
    """The request body, or ``InvalidRequest`` naming every problem and the first field."""
    try:
        return ModerationCreateRequest.model_validate_json(body)
    except ValidationError as exc:
        problems: dict[str, str | None] = {}  # message -> param, in order, without repeats
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else None
            if error["type"] == "json_invalid":
                problems[f"The request body is not valid JSON ({error['msg']})"] = None
            elif field is None:
                problems["The request body must be a JSON object"] = None
            elif error["type"] == "extra_forbidden":
                problems[f"Unrecognized request argument supplied: {field}"] = field
            elif error["type"] == "missing":
                problems[f"{field} is required"] = field
            elif field == "input":  # one message for the errors of every shape tried
                problems[f"{_INPUT_SHAPES}; got {_json_type(json.loads(body)['input'])}"] = field
            else:
                problems[f"{field}: {error['msg']}"] = field
        raise InvalidRequest(
            "; ".join(problems) + ".", param=next(iter(problems.values()))
        ) from None


_JSON_TYPES: Final[dict[type, str]] = {
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    dict: "an object",
    type(None): "null",
}


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "a list holding " + ", ".join(sorted({_json_type(v) for v in value}) or ["nothing"])
    return _JSON_TYPES.get(type(value), type(value).__name__)


def texts_of(request: ModerationCreateRequest) -> list[str]:
    """The texts to rate, one per result: a string, each string of a list, or the text parts
    of a multi-modal list joined into one. Refuses images and empty lists."""
    value = request.input
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequest("input is an empty list; send at least one string.", param="input")
    images = [i for i, part in enumerate(value) if isinstance(part, ImageInput)]
    if images:
        where = ", ".join(f"input[{i}]" for i in images)
        raise InvalidRequest(
            f"Image inputs are not supported ({where}): the built-in moderation model rates text "
            "only. Send the text alone.",
            param="input",
        )
    if all(isinstance(part, str) for part in value):
        return [part for part in value if isinstance(part, str)]
    return ["\n".join(part.text for part in value if isinstance(part, TextInput))]


def moderate(lexicon: LexiconFilter, text: str) -> Moderation:
    """One text's OpenAI moderation result."""
    worst = dict.fromkeys(CATEGORY_KEYS, 0)
    for hit in lexicon.scan(text):
        rank = SEVERITIES.index(hit.severity)
        for key in KEYS[(hit.category, hit.aspect)]:
            worst[key] = max(worst[key], rank)
    bar = SEVERITIES.index(lexicon.threshold)
    categories = {key: rank >= bar for key, rank in worst.items()}
    return Moderation(
        flagged=any(categories.values()),
        categories=categories,
        category_scores={key: SCORES[SEVERITIES[rank]] for key, rank in worst.items()},
        category_applied_input_types={key: ["text"] for key in CATEGORY_KEYS},
    )


def create_moderation(body: bytes, *, lexicon: LexiconFilter) -> ModerationCreateResponse:
    """``POST /v1/moderations``: the raw request body -> one result per input."""
    texts = texts_of(parse_request(body))
    return ModerationCreateResponse(
        id=new_id("modr-"), model=MODEL, results=[moderate(lexicon, text) for text in texts]
    )
