"""The streamed text of an answer: equal to decoding all its ids at once (accents, emoji and
characters split across tokens, with the toy tokenizer and the bundled SmolLM2's), stop
sequences cut where they first complete however the text is split into tokens, and a cost per
token that does not grow with the answer."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from tunesmith.serving.text_stream import MAX_CHAR_IDS, StopMatcher, TextStream

TEXT = "Déjà vu: naïve café, 東京 and 🦊🚀 — «quoted» ½ x² ∑ END of story.\nNext line 👩‍👩‍👧."


def streamed(tokenizer: Any, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[str, bool]:
    stream = TextStream(tokenizer, stop)
    text = ""
    for token in ids:
        text += stream.push(token)
        if stream.stopped:
            break
    return text + stream.flush(), stream.stopped


def reference_cut(text: str, stops: tuple[str, ...]) -> str:
    """The text before the stop sequence that completes first (the longest if several do)."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if s and text.endswith(s, 0, end)]
        if done:
            return text[: end - max(map(len, done))]
    return text


class ByteTokenizer:
    """One id per UTF-8 byte: every character of more than one byte is split across tokens.
    Counts the ids it decodes."""

    def __init__(self) -> None:
        self.decoded = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        self.decoded += len(ids)
        return bytes(ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def smollm2(bundled_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(bundled_model_dir))


@pytest.fixture(scope="module")
def toy(toy_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(toy_model_dir))


def test_the_stream_equals_one_decode_with_the_bundled_tokenizer(smollm2: Any) -> None:
    ids = smollm2.encode(TEXT, add_special_tokens=False)
    assert streamed(smollm2, ids) == (smollm2.decode(ids, skip_special_tokens=True), False)
    # Its special tokens are left out, as in one decode.
    chat = smollm2.apply_chat_template([{"role": "user", "content": TEXT}], tokenize=False)
    ids = smollm2.encode(chat, add_special_tokens=False)
    assert streamed(smollm2, ids)[0] == smollm2.decode(ids, skip_special_tokens=True)


def test_the_stream_equals_one_decode_with_the_toy_tokenizer(toy: Any) -> None:
    ids = toy.encode(TEXT, add_special_tokens=False)
    assert streamed(toy, ids)[0] == toy.decode(ids, skip_special_tokens=True)


def test_a_stop_sequence_never_reaches_the_client_even_in_part(smollm2: Any) -> None:
    ids = smollm2.encode(TEXT, add_special_tokens=False)
    stream = TextStream(smollm2, ("END of",))
    deltas = []
    for token in ids:
        deltas.append(stream.push(token))
        if stream.stopped:
            break
    assert stream.stopped and "".join(deltas) + stream.flush() == TEXT[: TEXT.index("END of")]
    assert not any("E" in delta for delta in deltas)
    # A stop sequence that starts inside an emoji's bytes and spans tokens.
    assert streamed(smollm2, ids, ("🚀 —",)) == (TEXT[: TEXT.index("🚀 —")], True)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet="abcé🦊 ", max_size=40),
    stops=st.lists(st.text(alphabet="abcé🦊 ", min_size=1, max_size=5), max_size=4),
)
def test_stops_cut_where_the_reference_does_for_any_text(text: str, stops: list[str]) -> None:
    expected = reference_cut(text, tuple(stops))
    tokenizer = ByteTokenizer()
    answer, stopped = streamed(tokenizer, tokenizer.encode(text), tuple(stops))
    assert answer == expected
    assert stopped == any(s in text for s in stops)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet="abab c", max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=20),
    stops=st.lists(st.text(alphabet="abab c", min_size=1, max_size=6), min_size=1, max_size=4),
)
def test_the_matcher_does_not_depend_on_how_text_is_split(
    text: str, cuts: list[int], stops: list[str]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    matcher = StopMatcher(tuple(stops))
    fed = ""
    for start, end in pairwise(bounds):
        at = matcher.feed(text[start:end])
        if at is not None:
            fed += text[start : start + at]
            assert fed[: len(fed) - matcher.matched] == reference_cut(text, tuple(stops))
            return
        fed += text[start:end]
        # What is held back is exactly the longest tail that begins a stop sequence.
        held = max((n for s in stops for n in range(len(s)) if fed.endswith(s[:n])), default=0)
        assert matcher.pending == held
    assert reference_cut(text, tuple(stops)) == text


def test_each_token_costs_the_same_however_long_the_answer() -> None:
    # Decoding the whole answer again at every token cost the square of its length.
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("é🦊 word " * 2000)
    answer, stopped = streamed(tokenizer, ids, ("x" * 256, "never here", "🦊🦊", "zz"))
    assert answer == "é🦊 word " * 2000 and not stopped
    assert tokenizer.decoded < 12 * len(ids)


def test_bytes_that_never_make_a_character_stream_in_linear_time() -> None:
    """A model may emit bytes that are no UTF-8 at all (a random or broken fine-tune does): the
    replacement character is final once more ids follow than any character needs, so the
    answer streams instead of waiting for its end, and no step re-decodes all of it."""
    tokenizer = ByteTokenizer()
    ids = [0xFF] * 3000 + [0xE2, 0x82] * 500  # 0xFF begins no character; E2 82 begins "€"
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids]
    text = "".join(pieces) + stream.flush()
    assert text == bytes(ids).decode("utf-8", errors="replace")
    assert sum(1 for p in pieces if p) >= len(ids) // MAX_CHAR_IDS  # it streams as it comes
    assert tokenizer.decoded < 12 * len(ids)
