"""Applies the lexicon (``serving/lexicon.py``) to a text: ``scan(text)`` -> the rules that hit.

The text is normalised once (``serving/normalise.py``); then every term list, benign context
and phrase rule runs as a precompiled regular expression over the normalised text, but only
when a word of the text begins the way one of the rule's matches must begin (its *heads*,
worked out from the rule's pattern when the rules are compiled). Most text gives most rules
nothing to do, so a short chat message costs tens of microseconds and a long completion a
fraction of a millisecond per few thousand characters.

A term inside a benign context of its category is capped at the context's severity; phrase
rules are never capped. Pure: no I/O, no state besides the compiled rules (built once per
process, on first use).
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass

from tunesmith.serving.lexicon import (
    CONTEXTS,
    PHRASES,
    SEVERITIES,
    TERMS,
    Aspect,
    Category,
    Context,
    Label,
    Phrase,
    Severity,
)
from tunesmith.serving.normalise import normalise


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule that matched: what it found, how bad, and the rule (the term, or a phrase name)."""

    category: Category
    severity: Severity
    aspect: Aspect | None
    rule: str


def _alternatives(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (not inside a group or a character class)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
        elif c == "[":
            i = pattern.index("]", i + 1)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*parts, pattern[start:]]


def _group_end(pattern: str) -> int:
    """Where the group that ``pattern`` opens with closes."""
    depth = 0
    for i, c in enumerate(pattern):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in the rule {pattern!r}")


def _heads(pattern: str) -> frozenset[str]:
    """Where ``pattern``'s matches can begin: the first two to four letters of the literal word
    each of its alternatives starts with (``kill(?:ed)?`` -> ``kill``). Every rule matches from
    the start of a word, so a text none of whose words begins with a head cannot match.

    Raises ``ValueError`` for an alternative that does not begin with a literal word of two
    letters or more, or with a group of such alternatives: a rule must say where it starts."""
    heads: set[str] = set()
    for alternative in _alternatives(pattern):
        start = alternative.removeprefix(r"\b")
        if start.startswith("(?:"):
            end = _group_end(start)
            if start[end + 1 : end + 2] not in {"?", "*", "{"}:
                heads.update(_heads(start[3:end]))
                continue
        literal = re.match(r"[a-z0-9 ]*", start)
        stem = literal.group() if literal else ""
        if start[len(stem) : len(stem) + 1] in {"?", "*", "{"}:
            stem = stem[:-1]  # "bombs?": the "s" is optional
        word = stem.split(" ", 1)[0]
        if len(word) < 2:
            raise ValueError(f"the rule alternative {alternative!r} does not begin with a word")
        heads.add(word[:4])
    return frozenset(heads)


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """Each rule with its heads and its compiled pattern (terms wrapped in word boundaries)."""

    terms: tuple[tuple[Label, frozenset[str], re.Pattern[str]], ...]
    contexts: tuple[tuple[Context, frozenset[str], re.Pattern[str]], ...]
    phrases: tuple[tuple[Phrase, frozenset[str], re.Pattern[str]], ...]


@functools.cache
def compiled_rules() -> CompiledRules:
    """Every rule compiled once per process, on first use (a few tens of milliseconds)."""
    return CompiledRules(
        terms=tuple(
            (label, _heads(words), re.compile(rf"\b(?:{words})\b"))
            for label, words in TERMS.items()
        ),
        contexts=tuple((c, _heads(c.pattern), re.compile(rf"\b(?:{c.pattern})")) for c in CONTEXTS),
        phrases=tuple((p, _heads(p.key), re.compile(p.pattern)) for p in PHRASES),
    )


def scan(text: str) -> list[Hit]:
    """The rules that hit ``text``, each once (a term repeated is one hit); an empty list for
    text no rule matches.

    A rule's regular expression runs only when a word of the normalised text begins with one
    of the rule's heads, a set intersection: most text gives most rules nothing to do."""
    norm = normalise(text)
    words = set(norm.split())
    present = {word[:n] for word in words for n in (2, 3, 4)}
    rules = compiled_rules()
    # Term matches in text order, each with its rank, to be capped by the contexts around them.
    found = sorted(
        (
            (match.start(), match.end(), label, match.group())
            for label, heads, pattern in rules.terms
            if not heads.isdisjoint(present)
            for match in pattern.finditer(norm)
        ),
        key=lambda item: item[0],
    )
    ranks = [SEVERITIES.index(label[1]) for _, _, label, _ in found]
    starts = [start for start, _, _, _ in found]
    categories = {label[0] for _, _, label, _ in found}
    for context, heads, pattern in rules.contexts:
        if categories.isdisjoint(context.categories) or heads.isdisjoint(present):
            continue
        cap = SEVERITIES.index(context.cap)
        for match in pattern.finditer(norm):
            # The terms that start inside this context, found by bisection.
            first = bisect.bisect_left(starts, match.start())
            for i in range(first, bisect.bisect_left(starts, match.end(), lo=first)):
                _, end, label, _ = found[i]
                if label[0] in context.categories and end <= match.end():
                    ranks[i] = min(ranks[i], cap)
    hits = [
        Hit(label[0], SEVERITIES[rank], label[2], term)
        for (_, _, label, term), rank in zip(found, ranks, strict=True)
        if rank
    ]
    for phrase, heads, pattern in rules.phrases:
        if not heads.isdisjoint(present) and pattern.search(norm):
            hits.extend(
                Hit(category, severity, aspect, phrase.name)
                for category, severity, aspect in phrase.labels
            )
    return list(dict.fromkeys(hits))
