"""The content filter of deployments, as in Azure OpenAI: a text (a prompt, or a completion) is
rated in four categories — hate, sexual, violence, self_harm — on Azure's severity scale
``safe < low < medium < high``, and each category at or above the filter's threshold
(``medium`` by default, Azure's default) is *filtered*.

Two filters share the ``ContentFilter`` protocol, and ``build_filter(settings)`` picks one:

- ``LexiconFilter``, built in: normalisation, curated terms, benign contexts and phrase rules
  (``serving/normalise.py``, ``serving/lexicon.py``, ``serving/scanner.py``). Pure Python,
  tens of microseconds for a chat message.
- ``RemoteModerationFilter``: an OpenAI-compatible moderation endpoint, when the operator sets
  ``TUNESMITH_MODERATION_URL``. It fails closed: when the endpoint cannot answer, ``check``
  raises ``ServiceUnavailable`` (503) instead of letting the text through.

What each one catches and misses is written down in ``docs/CONTENT_FILTER.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol, get_args

import httpx
from pydantic import BaseModel, Field, ValidationError

from tunesmith.errors import ServiceUnavailable
from tunesmith.serving.lexicon import CATEGORIES, SEVERITIES, Category, Severity
from tunesmith.serving.scanner import Hit, scan
from tunesmith.settings import Settings

__all__ = [
    "CATEGORIES",
    "OPENAI_CATEGORIES",
    "OVERLAP_CHARS",
    "SCORE_BANDS",
    "SEVERE_FLAGS",
    "BlockThreshold",
    "Category",
    "CategoryResult",
    "ContentFilter",
    "FilterResult",
    "LexiconFilter",
    "RemoteModerationFilter",
    "Severity",
    "build_filter",
    "severities_from_openai",
    "window_start",
]

BlockThreshold = Literal["low", "medium", "high"]
"""The lowest severity a filter blocks: Azure's "block low, medium and high" ... "block high"."""


@dataclass(frozen=True, slots=True)
class CategoryResult:
    """One category's rating: how bad, and whether that reaches the filter's threshold."""

    severity: Severity
    filtered: bool


@dataclass(frozen=True, slots=True)
class FilterResult:
    """One text's rating: every one of ``CATEGORIES``, in that order."""

    categories: dict[str, CategoryResult]

    @property
    def filtered(self) -> bool:
        """Whether any category is filtered: the text must not go through."""
        return any(result.filtered for result in self.categories.values())

    def blocked(self) -> list[str]:
        """The names of the filtered categories, in ``CATEGORIES`` order."""
        return [name for name, result in self.categories.items() if result.filtered]

    def to_azure(self) -> dict[str, dict[str, object]]:
        """Azure OpenAI's ``content_filter_results``:
        ``{"hate": {"filtered": false, "severity": "safe"}, ...}``."""
        return {
            name: {"filtered": result.filtered, "severity": result.severity}
            for name, result in self.categories.items()
        }


class ContentFilter(Protocol):
    check_every_chars: int
    """How much new text a streamed completion gathers between two checks: 0 for a local filter
    (microseconds a check: every word is checked, on the event loop), more where each check is
    a network request (made on a worker thread)."""

    def check(self, text: str) -> FilterResult:
        """Rates ``text``; raises ``ServiceUnavailable`` when it cannot (remote filter)."""
        ...

    def close(self) -> None:
        """Releases what the filter holds (connections)."""
        ...


OVERLAP_CHARS: Final = 512
"""How much of the text already checked a streamed answer's next check scans again, before its
new text: more than any rule spans in practice (a phrase rule spans a few words), so a term or
phrase that crosses from old text into new is seen whole."""

_SAFE_CUT: Final = re.compile(r"\S\S\s+(?=\S\S)")
"""Whitespace between two words of two characters or more: a window cut there normalises as the
whole text does (only runs of single letters, ``k i l l``, are read across a space)."""


def window_start(checked: str) -> int:
    """Where the check of ``checked`` + new text may begin: ``OVERLAP_CHARS`` or a little more
    before the end of ``checked``, at a word break that no rule reads across (0 for a short
    text). Each check of a long answer then costs the same, not the length of the answer."""
    if len(checked) <= OVERLAP_CHARS:
        return 0
    end = len(checked) - OVERLAP_CHARS
    cuts = [m.end() for m in _SAFE_CUT.finditer(checked, max(0, end - OVERLAP_CHARS // 2), end)]
    return cuts[-1] if cuts else end


def _check_threshold(threshold: BlockThreshold) -> BlockThreshold:
    """The threshold, checked at run time too: it may come from configuration."""
    if threshold not in get_args(BlockThreshold):
        raise ValueError(
            "The content filter threshold must be one of "
            f"{', '.join(get_args(BlockThreshold))}; got {threshold!r}."
        )
    return threshold


def _rated(severities: Mapping[Category, Severity], threshold: BlockThreshold) -> FilterResult:
    bar = SEVERITIES.index(threshold)
    return FilterResult(
        {
            name: CategoryResult(severities[name], SEVERITIES.index(severities[name]) >= bar)
            for name in CATEGORIES
        }
    )


class LexiconFilter:
    """The built-in rules-and-lexicon filter. ``threshold``: the lowest severity it blocks."""

    check_every_chars = 0

    def __init__(self, *, threshold: BlockThreshold = "medium") -> None:
        self.threshold: BlockThreshold = _check_threshold(threshold)

    def close(self) -> None:
        """Nothing to release."""

    def scan(self, text: str) -> list[Hit]:
        """The rules that hit ``text``, with their aspects (``POST /v1/moderations`` maps them
        onto OpenAI's subcategories)."""
        return scan(text)

    def check(self, text: str) -> FilterResult:
        worst: dict[Category, Severity] = dict.fromkeys(CATEGORIES, "safe")
        for hit in scan(text):
            if SEVERITIES.index(hit.severity) > SEVERITIES.index(worst[hit.category]):
                worst[hit.category] = hit.severity
        return _rated(worst, self.threshold)


# -- an OpenAI-compatible moderation endpoint ---------------------------------------------------

OPENAI_CATEGORIES: Final[dict[Category, tuple[str, ...]]] = {
    "hate": ("hate", "hate/threatening", "harassment"),
    "sexual": ("sexual", "sexual/minors"),
    "violence": ("violence", "violence/graphic", "harassment/threatening", "illicit/violent"),
    "self_harm": ("self-harm", "self-harm/intent", "self-harm/instructions"),
}
"""OpenAI's moderation categories, by the one of ours each counts towards. Threats against a
person (``harassment/threatening``) and weapon instructions (``illicit/violent``) are violence,
as in Azure; OpenAI's ``illicit`` (non-violent wrongdoing) has no Azure category and is unused."""

SCORE_BANDS: Final[tuple[tuple[float, Severity], ...]] = (
    (0.85, "high"),
    (0.5, "medium"),
    (0.1, "low"),
)
"""The highest score among a category's keys sets its severity: below 0.1 safe, from 0.1 low,
from 0.5 medium, from 0.85 high. The built-in filter's moderation scores (0.3, 0.6, 0.9) fall
one in each band, so its ``POST /v1/moderations`` answer read back here gives its own ratings."""

SEVERE_FLAGS: Final = frozenset(
    {
        "hate/threatening",
        "illicit/violent",
        "sexual/minors",
        "self-harm/intent",
        "self-harm/instructions",
    }
)
"""Subcategories that, flagged by the endpoint, make their category ``high`` whatever the score:
threats against a group, weapon instructions, minors, self-harm intent and instructions. (A
threat against one person, ``harassment/threatening``, is rated by its score: "I will hurt
you" is a medium threat, "I will kill you" a high one.)"""


def severities_from_openai(
    flags: Mapping[str, bool | None], scores: Mapping[str, float | None]
) -> dict[Category, Severity]:
    """OpenAI's ``categories`` and ``category_scores`` -> a severity per category of ours: the
    score band of the highest score; at least ``medium`` when the endpoint flagged any of the
    category's keys (its own judgement is never weakened); ``high`` for a flagged key in
    ``SEVERE_FLAGS``. Keys the endpoint leaves out count as 0 and unflagged."""
    severities: dict[Category, Severity] = {}
    for category, keys in OPENAI_CATEGORIES.items():
        top = max((scores.get(key) or 0.0) for key in keys)
        severity: Severity = next((s for bar, s in SCORE_BANDS if top >= bar), "safe")
        flagged = {key for key in keys if flags.get(key)}
        if flagged & SEVERE_FLAGS:
            severity = "high"
        elif flagged and SEVERITIES.index(severity) < SEVERITIES.index("medium"):
            severity = "medium"
        severities[category] = severity
    return severities


class _RemoteResult(BaseModel):
    categories: dict[str, bool | None] = Field(default_factory=dict)
    category_scores: dict[str, float | None]


class _RemoteResponse(BaseModel):
    results: list[_RemoteResult] = Field(min_length=1)


class RemoteModerationFilter:
    """Rates text with an OpenAI-compatible moderation endpoint (``POST {url}`` with
    ``{"input": text, "model": model}``), mapped by ``severities_from_openai``.

    Fails closed: a timeout, a connection error, an answer other than 200 or a body that is not
    a moderation response raises ``ServiceUnavailable``, whose message names the endpoint (never
    its key, its credentials or its query string) and what went wrong. Thread-safe; one
    connection pool per filter, released by ``close()``."""

    check_every_chars = 200  # a streamed answer is checked about every two sentences

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout_seconds: float = 10.0,
        threshold: BlockThreshold = "medium",
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise ValueError(f"moderation_url must be an absolute http(s) URL; got {url!r}.")
        self.url = url
        self.endpoint = str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
        """The URL as error messages show it."""
        self.model = model
        self.timeout_seconds = timeout_seconds
        self.threshold: BlockThreshold = _check_threshold(threshold)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_seconds, headers=headers)

    def check(self, text: str) -> FilterResult:
        body: dict[str, str] = {"input": text}
        if self.model:
            body["model"] = self.model
        try:
            response = self._client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise self._unavailable(f"did not answer within {self.timeout_seconds:g} s") from None
        except httpx.HTTPError as exc:
            raise self._unavailable(f"could not be reached ({type(exc).__name__}: {exc})") from None
        if response.status_code != 200:
            raise self._unavailable(
                f"answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
            )
        try:
            result = _RemoteResponse.model_validate_json(response.content).results[0]
        except ValidationError:
            raise self._unavailable(
                "answered with a body that is not an OpenAI moderation response "
                '({"results": [{"categories": {...}, "category_scores": {...}}]})'
            ) from None
        return _rated(
            severities_from_openai(result.categories, result.category_scores), self.threshold
        )

    def close(self) -> None:
        self._client.close()

    def _unavailable(self, what: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"The content filter could not check this text: the moderation endpoint "
            f"{self.endpoint} {what}. Retry later; if this persists, the operator should check "
            "the endpoint (TUNESMITH_MODERATION_URL).",
            code="content_filter_unavailable",
        )


def build_filter(settings: Settings) -> ContentFilter:
    """The filter for deployments: the moderation endpoint when ``moderation_url`` is set,
    else the built-in ``LexiconFilter``."""
    if settings.moderation_url:
        key = settings.moderation_api_key
        return RemoteModerationFilter(
            settings.moderation_url,
            api_key=key.get_secret_value() if key else None,
            model=settings.moderation_model,
            timeout_seconds=settings.moderation_timeout_seconds,
        )
    return LexiconFilter()
