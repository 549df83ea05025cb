"""The completion filter on a streamed answer (issue 15, finding 2): each check reads the new
text and a bounded overlap of what was checked before, never the whole answer again, and the
outcome is the one checking the whole answer at every word gives: the same text released, the
same choices blocked, the same final verdict.

The specification (``reference``) is the filter as it was: the whole text so far checked at
every word boundary. The streams here are real filter runs through ``generation``'s release
logic, with the built-in lexicon filter, over long answers that carry the filter's own test
sentences (caught, benign, obfuscated) at the start, in the middle and at the end."""

from __future__ import annotations

import random
from typing import Any, cast

from tests.helpers import run_coroutine
from tests.test_safety import BENIGN, CAUGHT, OBFUSCATED
from tunesmith.chat import Call
from tunesmith.generation import _Choice, _last_boundary, _release
from tunesmith.serving.safety import OVERLAP_CHARS, FilterResult, LexiconFilter

FILLER = (
    "The harbour town woke slowly. Fishermen mended their nets along the quay, and the baker "
    "opened his shutters to the smell of bread. Children ran past the old chapel toward the "
    "school, where the teacher was already writing the day's lesson on the board. "
)


class RecordingFilter(LexiconFilter):
    """The built-in filter, noting how long each text it checks is."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[int] = []

    def check(self, text: str) -> FilterResult:
        self.checked.append(len(text))
        return super().check(text)


def pieces_of(text: str, seed: int) -> list[str]:
    """``text`` cut into token-sized pieces of one to six characters."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        step = rng.randint(1, 6)
        out.append(text[i : i + step])
        i += step
    return out


def streamed(pieces: list[str], content_filter: LexiconFilter) -> tuple[str, bool, Any]:
    """What the client receives, whether the choice was blocked, and the last verdict."""
    call = Call(
        id="cmpl-test",
        created=0,
        kind="completion",
        target=cast(Any, None),
        assets=cast(Any, None),
        prompt=[],
        params=[],
        admission=cast(Any, None),
        content_filter=content_filter,
        prompt_filter=None,
    )
    choice = _Choice(None)

    async def run() -> str:
        out = []
        for piece in pieces:
            async for delta in _release(call, 0, choice, [piece], final=False):
                out.append(delta.text)
        async for delta in _release(call, 0, choice, [], final=True):
            out.append(delta.text)
        return "".join(out)

    text = run_coroutine(run())
    return text, call.blocked(0), call.filter_results[0].to_azure()


def reference(pieces: list[str]) -> tuple[str, bool, Any]:
    """The whole text so far checked at every word boundary, and whole at the end."""
    check = LexiconFilter().check
    sent = held = ""
    verdict = check("")
    for piece in pieces:
        held += piece
        end = _last_boundary(held)
        if end:
            verdict = check(sent + held[:end])
            if verdict.filtered:
                return sent, True, verdict.to_azure()
            sent, held = sent + held[:end], held[end:]
    verdict = check(sent + held)
    if verdict.filtered:
        return sent, True, verdict.to_azure()
    return sent + held, False, verdict.to_azure()


SENTENCES = [text for text, _, _ in CAUGHT] + BENIGN + OBFUSCATED


def test_streamed_verdicts_equal_checking_the_whole_text_at_every_word() -> None:
    for n, sentence in enumerate(SENTENCES):
        before = (0, 3, 6)[n % 3]  # at the start, in the middle or at the end, in turn
        text = FILLER * before + sentence + " " + FILLER * (6 - before)  # 1,400 characters
        pieces = pieces_of(text, seed=n)
        assert streamed(pieces, LexiconFilter()) == reference(pieces), sentence


def test_each_check_of_a_long_answer_reads_a_bounded_window() -> None:
    text = FILLER * 60  # about 13,000 characters
    recorder = RecordingFilter()
    released, blocked, _ = streamed(pieces_of(text, seed=1), recorder)
    assert (released, blocked) == (text, False)
    *streaming, last = recorder.checked
    assert last == len(text)  # the last check reads the whole answer
    assert len(streaming) > 1000  # every word checked as it came
    assert max(streaming) <= 2 * OVERLAP_CHARS + 64  # the overlap, its cut, and new words
    # Checking the whole text at every word would read about n²/2 / (chars per word) chars.
    assert sum(streaming) < 2 * OVERLAP_CHARS * len(streaming)
