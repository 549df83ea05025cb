"""Turning generated token ids into text that streams safely, in time linear in the answer.

:class:`TextStream` takes one token at a time and hands out the text that became final. Two
things are held back: an incomplete UTF-8 character (a tokenizer decodes its bytes as U+FFFD;
held for at most ``MAX_CHAR_IDS`` ids, after which those bytes made no character and U+FFFD
is their text) and any tail that could still grow into a stop sequence, so a stop sequence
never reaches the client, even in part.

Each step costs the same however long the answer is. Decoding looks only at a short window of
ids (the few since the last complete character, and the ones before them for context: the same
window decoded with and without the newest ids, the difference being the new text), never at
the whole answer again. Stop sequences are matched one character at a time by a small automaton
per sequence (Knuth-Morris-Pratt), whose state is also how many characters to hold back.

A stop sequence ends the answer where it first completes; if two complete on the same
character, the longer one (which starts earlier) cuts. This depends only on the text, never on
how it was split into tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REPLACEMENT = "\ufffd"
MAX_CHAR_IDS = 4
"""Ids one character can take (UTF-8 has at most 4 bytes a character): a replacement character
still at the end after this many new ids is final, bytes that make no character at all."""


class StopMatcher:
    """Finds the first completed stop sequence in text fed piece by piece."""

    __slots__ = ("_fail", "_states", "_stops", "matched")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._fail = [_failure(s) for s in self._stops]
        self._states = [0] * len(self._stops)
        self.matched = 0
        """The length of the stop sequence :meth:`feed` last reported."""

    @property
    def pending(self) -> int:
        """Characters at the end of the text fed so far that may begin a stop sequence."""
        return max(self._states, default=0)

    def feed(self, text: str) -> int | None:
        """Feeds ``text``; the index in it just past the first stop sequence completed (the
        stop's length before that index is to be cut), or None."""
        if not self._stops:
            return None
        stops, fails, states = self._stops, self._fail, self._states
        for at, char in enumerate(text):
            done = 0
            for k, stop in enumerate(stops):
                state = states[k]
                while state and stop[state] != char:
                    state = fails[k][state - 1]
                if stop[state] == char:
                    state += 1
                if state == len(stop):
                    done = max(done, state)
                    state = fails[k][state - 1]
                states[k] = state
            if done:
                self.matched = done
                return at + 1
        return None


def _failure(stop: str) -> list[int]:
    """KMP's table: for each prefix of ``stop``, its longest proper prefix that is also a suffix."""
    table = [0] * len(stop)
    k = 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = table[k - 1]
        if stop[i] == stop[k]:
            k += 1
        table[i] = k
    return table


@dataclass(slots=True)
class TextStream:
    """Incremental detokenisation with stop sequences."""

    tokenizer: Any
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    text: str = ""
    """The answer's final text so far: everything decoded, up to a stop sequence."""
    sent: int = 0
    """Characters of ``text`` already handed out."""
    stopped: bool = False
    _prefix: int = 0
    """Where the decoding window starts: context for the ids after ``_read``."""
    _read: int = 0
    """Ids before this are in ``text``."""
    _matcher: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self._matcher = StopMatcher(self.stop)

    def push(self, token_id: int) -> str:
        """Adds a token; returns the text that became final (maybe empty). After a stop
        sequence appears, ``stopped`` is set and the text before it is the last delta."""
        self.ids.append(token_id)
        seen = self._decode(self._prefix, self._read)
        now = self._decode(self._prefix, len(self.ids))
        pending = len(self.ids) - self._read
        if len(now) <= len(seen) or (now.endswith(REPLACEMENT) and pending < MAX_CHAR_IDS):
            return ""  # an incomplete character (or nothing visible yet) waits
        self._prefix, self._read = self._read, len(self.ids)
        return self._add(now[len(seen) :], hold=True)

    def flush(self) -> str:
        """The held-back tail when generation ends without a stop sequence."""
        if self.stopped:
            return ""
        seen = self._decode(self._prefix, self._read)
        now = self._decode(self._prefix, len(self.ids))
        self._read = len(self.ids)
        return self._add(now[len(seen) :], hold=False)

    def _decode(self, start: int, end: int) -> str:
        if start == end:
            return ""
        return str(self.tokenizer.decode(self.ids[start:end], skip_special_tokens=True))

    def _add(self, new: str, *, hold: bool) -> str:
        end = self._matcher.feed(new)
        if end is not None:
            self.stopped = True
            self.text += new[:end]
            self.text = self.text[: len(self.text) - self._matcher.matched]
            return self._emit(len(self.text))
        self.text += new
        return self._emit(len(self.text) - (self._matcher.pending if hold else 0))

    def _emit(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta, self.sent = self.text[self.sent : upto], upto
        return delta
