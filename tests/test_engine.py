"""The generation engine on the toy model: exact against Hugging Face ``generate``, adapters
batched together giving each row its own answer, requests joining a running batch, choices,
seeds, stop sequences, cancellation, and bounded memory (LRU adapters, idle bases)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from tests.adapters import random_adapter
from tunesmith.catalog.models import load_causal_lm
from tunesmith.serving.adapters import Adapter
from tunesmith.serving.engine import Engine, ModelSource
from tunesmith.serving.sampling import SamplingParams
from tunesmith.serving.text_stream import TextStream
from tunesmith.training.lora import apply_lora, load_lora_state_dict, merge_lora, read_adapter

PROMPT = "The quick brown fox"


class Collect:
    """A sink that keeps what the engine hands it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reason: str | None = None
        self.tokens = 0
        self.first_at: float | None = None
        self.done = threading.Event()

    def token(self, text: str) -> None:
        self.first_at = self.first_at or time.monotonic()
        self.parts.append(text)

    def finish(self, reason: str, completion_tokens: int) -> None:
        self.reason, self.tokens = reason, completion_tokens
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.reason = f"failed: {error}"
        self.done.set()

    @property
    def text(self) -> str:
        assert self.done.wait(30), "the engine did not finish the request"
        return "".join(self.parts)


@pytest.fixture(scope="module")
def adapters(toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [random_adapter(toy_model_dir, root / f"a{seed}", seed=seed) for seed in (1, 2)]


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine(max_batch=8, max_adapters=4)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def tokenizer(toy_model_dir: Path) -> object:
    return AutoTokenizer.from_pretrained(str(toy_model_dir))


def submit(
    engine: Engine,
    source: ModelSource,
    tokenizer: object,
    *,
    max_tokens: int = 16,
    prompt: str = PROMPT,
    stop_ids: frozenset[int] = frozenset(),
    **params: object,
) -> Collect:
    sink = Collect()
    ids = tokenizer.encode(prompt)  # type: ignore[attr-defined]
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, **params)  # type: ignore[arg-type]
    engine.submit(source, ids, [(sampling, sink)], tokenizer=tokenizer, stop_ids=stop_ids)
    return sink


def hf_greedy(model: object, tokenizer: object, n: int) -> str:
    ids = torch.tensor([tokenizer.encode(PROMPT)])  # type: ignore[attr-defined]
    out = model.generate(  # type: ignore[attr-defined]
        ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))  # type: ignore[attr-defined]


def test_greedy_answers_equal_hugging_face_generate_for_the_base_and_an_adapter(
    engine: Engine, toy_model_dir: Path, adapters: list[Path], tokenizer: object
) -> None:
    base = load_causal_lm(toy_model_dir)
    assert submit(engine, ModelSource(toy_model_dir), tokenizer).text == hf_greedy(
        base, tokenizer, 16
    )
    merged = load_causal_lm(toy_model_dir)
    config, weights = read_adapter(adapters[0])
    apply_lora(
        merged,
        tuple(config["target_modules"]),
        rank=config["r"],
        alpha=config["lora_alpha"],
        dropout=0.0,
    )
    load_lora_state_dict(merged, weights)
    merge_lora(merged)
    served = submit(engine, ModelSource(toy_model_dir, adapters[0]), tokenizer)
    assert served.text == hf_greedy(merged, tokenizer, 16)
    assert served.reason == "length" and served.tokens == 16


def test_different_adapters_in_one_batch_each_give_their_own_answer(
    engine: Engine, toy_model_dir: Path, adapters: list[Path], tokenizer: object
) -> None:
    sources = [ModelSource(toy_model_dir), *(ModelSource(toy_model_dir, a) for a in adapters)]
    alone = [submit(engine, s, tokenizer).text for s in sources]
    assert len(set(alone)) == 3  # base and both adapters answer differently
    together = [submit(engine, s, tokenizer) for s in sources * 2]
    assert [c.text for c in together] == alone * 2


def test_a_request_joins_a_running_batch_and_leaves_it_when_done(
    engine: Engine, toy_model_dir: Path, adapters: list[Path], tokenizer: object
) -> None:
    source = ModelSource(toy_model_dir, adapters[0])
    short_alone = submit(engine, ModelSource(toy_model_dir), tokenizer, max_tokens=4).text
    long_alone = submit(engine, source, tokenizer, max_tokens=200).text
    long = submit(engine, source, tokenizer, max_tokens=200)
    while long.first_at is None:
        time.sleep(0.001)
    short = submit(engine, ModelSource(toy_model_dir), tokenizer, max_tokens=4)
    assert short.text == short_alone
    assert not long.done.is_set()  # the short one finished while the long one still ran
    assert long.text == long_alone


def test_a_row_moved_into_a_freed_one_keeps_its_adapter(
    engine: Engine, toy_model_dir: Path, adapters: list[Path], tokenizer: object
) -> None:
    first, second = (ModelSource(toy_model_dir, a) for a in adapters)
    alone = [submit(engine, s, tokenizer, max_tokens=60).text for s in (first, second)]
    running = submit(engine, first, tokenizer, max_tokens=60)
    while running.first_at is None:
        time.sleep(0.001)
    short = submit(engine, ModelSource(toy_model_dir), tokenizer, max_tokens=3)  # row 1
    moved = submit(engine, second, tokenizer, max_tokens=60)  # row 2, then row 1
    assert short.text and not moved.done.is_set()
    assert [running.text, moved.text] == alone


def test_choices_share_a_prompt_and_follow_their_seeds(
    engine: Engine, toy_model_dir: Path, tokenizer: object
) -> None:
    ids = tokenizer.encode(PROMPT)  # type: ignore[attr-defined]

    def sample(seeds: list[int]) -> list[str]:
        sinks = [Collect() for _ in seeds]
        choices = [
            (SamplingParams(max_tokens=12, temperature=1.0, seed=seed), sink)
            for seed, sink in zip(seeds, sinks, strict=True)
        ]
        engine.submit(
            ModelSource(toy_model_dir), ids, choices, tokenizer=tokenizer, stop_ids=frozenset()
        )
        return [s.text for s in sinks]

    first = sample([1, 2, 3])
    assert sample([1, 2, 3]) == first
    assert len(set(first)) == 3


def test_top_p_near_zero_is_greedy(engine: Engine, toy_model_dir: Path, tokenizer: object) -> None:
    greedy = submit(engine, ModelSource(toy_model_dir), tokenizer).text
    sink = Collect()
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=1e-6, seed=5)
    engine.submit(
        ModelSource(toy_model_dir),
        tokenizer.encode(PROMPT),  # type: ignore[attr-defined]
        [(params, sink)],
        tokenizer=tokenizer,
        stop_ids=frozenset(),
    )
    assert sink.text == greedy


@pytest.mark.parametrize("temperature", [5e-324, 1e-45, 1e-8])
def test_a_tiny_temperature_is_greedy_and_fails_nobody(
    engine: Engine, toy_model_dir: Path, tokenizer: object, temperature: float
) -> None:
    # Found by tests/test_fuzz_api.py: logits divided by a temperature this small overflowed to
    # inf and NaN, sampling raised, and the failed step failed every request in the batch.
    source = ModelSource(toy_model_dir)
    greedy = submit(engine, source, tokenizer).text
    neighbour = submit(engine, source, tokenizer, max_tokens=48)
    sink = Collect()
    params = SamplingParams(max_tokens=16, temperature=temperature, seed=5)
    engine.submit(
        source,
        tokenizer.encode(PROMPT),  # type: ignore[attr-defined]
        [(params, sink)],
        tokenizer=tokenizer,
        stop_ids=frozenset(),
    )
    assert sink.text == greedy, sink.reason
    assert neighbour.text and neighbour.reason in ("stop", "length"), neighbour.reason


def test_an_end_of_turn_token_and_a_stop_sequence_end_with_stop(
    engine: Engine, toy_model_dir: Path, tokenizer: object
) -> None:
    source = ModelSource(toy_model_dir)
    full = submit(engine, source, tokenizer, max_tokens=16)
    first_id = tokenizer.encode(PROMPT + full.text)[len(tokenizer.encode(PROMPT))]  # type: ignore[attr-defined]
    ended = submit(engine, source, tokenizer, stop_ids=frozenset({first_id}))
    assert (ended.text, ended.reason, ended.tokens) == ("", "stop", 0)
    stop = full.text[5:8]
    cut = submit(engine, source, tokenizer, stop=(stop,))
    assert cut.text == full.text[: full.text.index(stop)] and cut.reason == "stop"


def test_a_cancelled_request_finishes_as_cancelled(
    engine: Engine, toy_model_dir: Path, tokenizer: object
) -> None:
    sink = Collect()
    generation = engine.submit(
        ModelSource(toy_model_dir),
        tokenizer.encode(PROMPT),  # type: ignore[attr-defined]
        [(SamplingParams(max_tokens=200, temperature=0.0), sink)],
        tokenizer=tokenizer,
        stop_ids=frozenset(),
    )
    while sink.first_at is None:
        time.sleep(0.001)
    generation.cancel()
    assert sink.done.wait(10)
    assert sink.reason == "cancelled" and 0 < sink.tokens < 200


def test_adapters_beyond_the_limit_are_evicted_and_reloaded(
    toy_model_dir: Path, adapters: list[Path], tokenizer: object
) -> None:
    engine = Engine(max_batch=4, max_adapters=1)
    engine.start()
    try:
        first = submit(engine, ModelSource(toy_model_dir, adapters[0]), tokenizer).text
        second = submit(engine, ModelSource(toy_model_dir, adapters[1]), tokenizer).text
        (base,) = engine.stats().bases.values()
        assert list(base["adapters"]) == [str(adapters[1])]
        assert submit(engine, ModelSource(toy_model_dir, adapters[0]), tokenizer).text == first
        (base,) = engine.stats().bases.values()
        assert list(base["adapters"]) == [str(adapters[0])]
        assert first != second
    finally:
        engine.stop()


def test_an_idle_base_model_is_unloaded(toy_model_dir: Path, tokenizer: object) -> None:
    engine = Engine(max_batch=2, base_idle_seconds=0.2)
    engine.start()
    try:
        submit(engine, ModelSource(toy_model_dir), tokenizer).text  # noqa: B018 (waits)
        assert engine.stats().bases
        deadline = time.monotonic() + 10
        while engine.stats().bases and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not engine.stats().bases
    finally:
        engine.stop()


class Clock:
    """Engine time that moves only when the test moves it; counts the engine thread's reads
    (an idle engine reads it only in its idle sweep)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.engine_reads = 0

    def __call__(self) -> float:
        if threading.current_thread().name == "tunesmith-engine":
            self.engine_reads += 1
        return self.now

    def idle_an_hour_and_sweep(self) -> None:
        """Every base falls idle; returns once the engine's sweep has seen it (the sweep holds
        the engine's lock, so whatever the caller does next under that lock comes after it)."""
        self.now += 3600
        reads = self.engine_reads
        deadline = time.monotonic() + 30
        while self.engine_reads == reads:
            assert time.monotonic() < deadline, "the engine's idle sweep did not run"
            time.sleep(0.005)


class SweepBeforeQueueing(Engine):
    """An engine whose next adapter load waits for an idle sweep: a request then sits between
    finding its base and queueing on it (loading an adapter is where that window is widest)
    while the engine decides whether the base is idle."""

    def __init__(self, clock: Clock, **options: Any) -> None:
        super().__init__(clock=clock, **options)
        self.clock = clock
        self.sweep_on_next_adapter = False

    def _load_adapter(self, key: str, folder: Path) -> Adapter:
        if self.sweep_on_next_adapter:
            self.sweep_on_next_adapter = False
            self.clock.idle_an_hour_and_sweep()
        return super()._load_adapter(key, folder)


def test_a_base_falling_idle_while_a_request_queues_on_it_still_serves_the_request(
    toy_model_dir: Path, adapters: list[Path], tokenizer: object
) -> None:
    source = ModelSource(toy_model_dir, adapters[0])
    reference = Engine(max_batch=2)
    reference.start()
    try:
        expected = submit(reference, source, tokenizer).text
    finally:
        reference.stop()
    clock = Clock()
    engine = SweepBeforeQueueing(clock, max_batch=2, base_idle_seconds=0.05)
    engine.start()
    try:
        submit(engine, ModelSource(toy_model_dir), tokenizer).text  # noqa: B018 (resident)
        engine.sweep_on_next_adapter = True
        served = submit(engine, source, tokenizer)
        assert not engine.sweep_on_next_adapter  # the sweep ran inside the window
        assert served.done.wait(30), "the request waits forever on a base that was unloaded"
        assert (served.text, served.reason) == (expected, "length")
        # Once the request is done, nothing holds the base: idle, it is unloaded as before.
        clock.idle_an_hour_and_sweep()
        clock.idle_an_hour_and_sweep()  # a whole sweep after the one that may have been running
        assert not engine.stats().bases
        # And a request for a base that is gone loads it again.
        assert submit(engine, source, tokenizer).text == expected
    finally:
        engine.stop()


class _CharTokenizer:
    """Decodes ids as characters, with 0xFF bytes as halves of one character."""

    def __init__(self, pieces: dict[int, bytes]) -> None:
        self.pieces = pieces

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")


def test_text_stream_holds_back_stop_prefixes_and_split_characters() -> None:
    pieces = {1: b"Hello", 2: b" ", 3: b"EN", 4: b"D", 5: b"E", 6: b"\xc3", 7: b"\xa9"}
    stream = TextStream(_CharTokenizer(pieces), stop=("END",))
    assert [stream.push(i) for i in (1, 2, 5)] == ["Hello", " ", ""]  # "E" may start "END"
    assert stream.push(6) == ""  # half a character: "E" may still start "END"
    assert stream.push(7) == "Eé"
    assert [stream.push(i) for i in (3, 4)] == ["", ""] and stream.stopped
    assert stream.flush() == ""
    tail = TextStream(_CharTokenizer(pieces), stop=("END",))
    assert [tail.push(1), tail.push(3), tail.flush()] == ["Hello", "", "EN"]


def test_a_request_whose_prefill_fails_fails_alone_and_is_told(
    engine: Engine, toy_model_dir: Path, tokenizer: object
) -> None:
    """A prefill that raises (here a token id the model has no embedding for) used to leave
    its request neither pending nor running: the failed step failed the others, and it was
    never told, so its client waited for ever holding its concurrency slot."""
    source = ModelSource(toy_model_dir)
    running = submit(engine, source, tokenizer, max_tokens=48)
    broken = Collect()
    engine.submit(
        source,
        [10**6],  # no such token
        [(SamplingParams(max_tokens=4, temperature=0.0), broken)],
        tokenizer=tokenizer,
        stop_ids=frozenset(),
    )
    assert broken.done.wait(30), "the request whose prefill failed was never told"
    assert broken.reason is not None and broken.reason.startswith("failed:")
    assert running.text and running.reason in ("stop", "length"), running.reason
    assert submit(engine, source, tokenizer).text  # the engine serves on
