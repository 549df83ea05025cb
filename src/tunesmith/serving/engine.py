"""The generation engine: one resident copy of each base model, many adapters on it, and
continuous batching on a thread of its own.

::

    submit() ─► pending ─► [engine thread] admit: prefill into a free cache row (n choices: copies)
      (any thread)            │
                              ▼ every step: one decode over all active rows of a base, each row
                            sample ─► TextStream ─► Sink.token()   with its own adapter
                              │ eos, stop sequence, max_tokens, cancel
                              ▼
                            Sink.finish(); the last row moves into the freed one

Requests join a running batch between steps and leave it as soon as they finish. Nothing here
runs on the event loop: callers hand in a :class:`Sink` whose methods the engine thread calls
(the API bridges them into an asyncio queue).

Memory is bounded: a base model's adapters beyond ``max_adapters`` are evicted least recently
used (never while a request uses them) and loaded again on demand; a base model no request used
for ``base_idle_seconds`` is unloaded with its adapters and cache, but never while a request
holds its lease (from finding the base to being queued on it), so no request is queued on a
base the engine has dropped; the KV cache grows with the longest active sequence and is freed
when its base falls idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tunesmith.serving.adapters import Adapter, RowAdapters, load_adapter
from tunesmith.serving.forward import Decoder
from tunesmith.serving.sampling import SamplingParams, make_generator, next_token
from tunesmith.serving.text_stream import TextStream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What a request runs on: a folder of full weights, and an adapter folder or None."""

    weights: Path
    adapter: Path | None = None


class Sink(Protocol):
    """Receives one choice's output, on the engine thread: keep each call short."""

    def token(self, text: str) -> None: ...

    def finish(self, reason: str, completion_tokens: int) -> None:
        """``reason`` is ``stop``, ``length`` or ``cancelled``."""

    def fail(self, error: BaseException) -> None: ...


@dataclass(slots=True)
class _Sequence:
    """One choice being generated, in one cache row."""

    params: SamplingParams
    sink: Sink
    stream: TextStream
    generator: torch.Generator
    adapter: Adapter | None
    stop_ids: frozenset[int]
    last: int = -1
    generated: int = 0
    cancelled: bool = False


@dataclass(slots=True)
class Generation:
    """A submitted request (its ``n`` choices share one prompt). ``cancel`` is safe from any
    thread; the engine drops the choices before its next step."""

    prompt: list[int]
    sequences: list[_Sequence]
    cancelled: bool = False
    running: int = 0
    """Choices still in the cache; the adapter is unpinned when the last one leaves."""

    def cancel(self, choice: int | None = None) -> None:
        """Stops every choice, or only choice ``choice`` (its sink gets ``cancelled``)."""
        if choice is None:
            self.cancelled = True
        else:
            self.sequences[choice].cancelled = True


@dataclass(slots=True)
class _Base:
    decoder: Decoder
    row_adapters: RowAdapters
    """Row ``i``'s adapter, kept in step with ``active``."""
    adapters: OrderedDict[str, Adapter] = field(default_factory=OrderedDict)
    pinned: dict[str, int] = field(default_factory=dict)
    """Adapters in use by pending or active requests: never evicted."""
    pending: deque[Generation] = field(default_factory=deque)
    active: list[tuple[Generation, _Sequence]] = field(default_factory=list)
    """Row ``i`` of the cache holds ``active[i]``."""
    last_used: float = 0.0
    """When a request last used it, on the engine's clock."""
    leases: int = 0
    """Callers between finding this base and queueing on it (or done preparing): while any
    holds it, the idle sweep leaves it resident."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    bases: dict[str, dict[str, Any]]
    """Per resident base folder: ``weight_bytes``, ``cache_bytes``, ``adapters`` (bytes each),
    ``active`` and ``pending`` sequences."""

    def resident_bytes(self) -> int:
        return sum(
            b["weight_bytes"] + b["cache_bytes"] + sum(b["adapters"].values())
            for b in self.bases.values()
        )


class Engine:
    def __init__(
        self,
        *,
        max_batch: int = 16,
        max_adapters: int = 8,
        base_idle_seconds: float = 900.0,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        threads: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (seconds, only ever compared) times a base model's idleness."""
        self.max_batch = max_batch
        self.max_adapters = max_adapters
        self.base_idle_seconds = base_idle_seconds
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self._clock = clock
        self._bases: dict[Path, _Base] = {}
        self._lock = threading.Lock()  # guards _bases and every _Base's queues
        self._wake = threading.Condition(self._lock)
        self._load_lock = threading.Lock()  # one load at a time; decoding goes on meanwhile
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tunesmith-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- the callers' side ---------------------------------------------------------------------

    def prepare(self, source: ModelSource) -> None:
        """Loads the base model and the adapter if they are not resident (blocking: call it
        from a worker thread). Deploying an adapter onto a resident base takes well under a
        second; a base model loads in about one second from its safetensors. A base that
        falls idle before the request is submitted is loaded again by :meth:`submit`."""
        with self._leased(source):
            pass

    def submit(
        self,
        source: ModelSource,
        prompt: list[int],
        choices: list[tuple[SamplingParams, Sink]],
        *,
        tokenizer: Any,
        stop_ids: frozenset[int],
    ) -> Generation:
        """Queues a prompt with one sampling setting and sink per choice."""
        if not 1 <= len(choices) <= self.max_batch:
            raise ValueError(f"between 1 and {self.max_batch} choices per request")
        with self._leased(source) as (base, adapter):  # not unloaded until queued on
            limit = base.decoder.context_length
            for params, _ in choices:
                if len(prompt) + params.max_tokens > limit:
                    raise ValueError(f"prompt and max_tokens exceed the context length {limit}")
            sequences = [
                _Sequence(
                    params=params,
                    sink=sink,
                    stream=TextStream(tokenizer, params.stop),
                    generator=make_generator(params.seed),
                    adapter=adapter,
                    stop_ids=stop_ids,
                )
                for params, sink in choices
            ]
            generation = Generation(prompt=list(prompt), sequences=sequences)
            with self._wake:
                if adapter is not None:
                    base.pinned[adapter.key] = base.pinned.get(adapter.key, 0) + 1
                base.pending.append(generation)
                base.last_used = self._clock()
                self._wake.notify_all()
        return generation

    def stats(self) -> EngineStats:
        with self._lock:
            bases = {
                str(path): {
                    "weight_bytes": base.decoder.weight_bytes(),
                    "cache_bytes": base.decoder.cache_bytes(),
                    "adapters": {key: a.nbytes for key, a in base.adapters.items()},
                    "active": len(base.active),
                    "pending": sum(len(g.sequences) for g in base.pending),
                }
                for path, base in self._bases.items()
            }
        return EngineStats(bases)

    # -- loading -------------------------------------------------------------------------------

    @contextmanager
    def _leased(self, source: ModelSource) -> Iterator[tuple[_Base, Adapter | None]]:
        """The resident base (loaded if need be) and adapter of ``source``, the base held
        resident for the block: the idle sweep never unloads a leased base, so a request that
        found it queues on a base the engine still runs."""
        with self._load_lock:
            with self._lock:
                base = self._bases.get(source.weights)
                if base is not None:  # found and leased in one step, between two sweeps
                    base.leases += 1
            if base is None:
                decoder = Decoder(self._load_model(source.weights), rows=self.max_batch)
                base = _Base(decoder, RowAdapters(self.max_batch), last_used=self._clock())
                base.leases = 1
                with self._lock:
                    self._bases[source.weights] = base
            try:
                adapter = self._adapter(base, source)
            except BaseException:
                self._release_lease(base)
                raise
        try:
            yield base, adapter
        finally:
            self._release_lease(base)

    def _release_lease(self, base: _Base) -> None:
        with self._lock:
            base.leases -= 1
            base.last_used = self._clock()

    def _adapter(self, base: _Base, source: ModelSource) -> Adapter | None:
        """Called with the load lock held and ``base`` leased."""
        if source.adapter is None:
            return None
        key = str(source.adapter)
        with self._lock:
            adapter = base.adapters.get(key)
            if adapter is not None:
                base.adapters.move_to_end(key)
                return adapter
        adapter = self._load_adapter(key, source.adapter)
        base.decoder.check_adapter(adapter)
        with self._lock:
            base.adapters[key] = adapter
            self._evict(base)
        return adapter

    def _load_model(self, folder: Path) -> Any:
        from tunesmith.catalog.models import load_causal_lm

        # The decoder attends by itself (``attention.py``) and never calls the model's attention:
        # eager is the implementation every family loads with (Gemma 2 refuses SDPA).
        model = load_causal_lm(folder, dtype=self.dtype, device=self.device, attention="eager")
        model.eval()  # type: ignore[no-untyped-call]
        return model

    def _load_adapter(self, key: str, folder: Path) -> Adapter:
        return load_adapter(key, folder, dtype=self.dtype, device=self.device)

    def _evict(self, base: _Base) -> None:
        """Drops least recently used adapters beyond the limit, sparing those in use and the
        newest (loaded for a request about to be queued). A request keeps its adapter's
        weights even if it is evicted meanwhile; eviction only stops keeping them."""
        for key in list(base.adapters)[:-1]:
            if len(base.adapters) <= self.max_adapters:
                return
            if not base.pinned.get(key):
                del base.adapters[key]

    # -- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while True:
            with self._wake:
                while not self._stopping and not self._has_work():
                    self._wake.wait(timeout=min(60.0, self.base_idle_seconds))
                    self._unload_idle()
                if self._stopping:
                    self._abandon_all()
                    return
                bases = list(self._bases.values())
            for base in bases:
                try:
                    self._step(base)
                except Exception as exc:  # a failed step fails its requests, not the engine
                    log.exception("generation step failed")
                    self._fail_all(base, exc)

    def _has_work(self) -> bool:
        return any(b.pending or b.active for b in self._bases.values())

    def _step(self, base: _Base) -> None:
        self._admit(base)
        if not base.active:
            return
        self._drop_cancelled(base)
        if not base.active:
            return
        logits = base.decoder.decode([s.last for _, s in base.active], base.row_adapters)
        finished = [
            row
            for row, (_, sequence) in enumerate(base.active)
            if self._advance(sequence, logits[row])
        ]
        self._release(base, finished)

    def _admit(self, base: _Base) -> None:
        """Prefills pending requests while the cache has rows for all their choices."""
        while True:
            with self._lock:
                if not base.pending:
                    return
                generation = base.pending[0]
                if len(base.active) + len(generation.sequences) > base.decoder.rows:
                    return
                base.pending.popleft()
                if generation.cancelled:
                    self._unpin(base, generation)
            if generation.cancelled:
                for sequence in generation.sequences:
                    sequence.sink.finish("cancelled", 0)
                continue
            base.last_used = self._clock()
            first_row = len(base.active)
            try:
                done = self._start(base, generation, first_row)
            except Exception as exc:  # this request's prefill failed: it fails, alone
                log.exception("prefill failed")
                while len(base.active) > first_row:  # its rows, if it took any
                    base.active.pop()
                    base.row_adapters.pop()
                with self._lock:
                    self._unpin(base, generation)
                for sequence in generation.sequences:
                    sequence.sink.fail(exc)
                continue
            self._release(base, done)

    def _start(self, base: _Base, generation: Generation, first_row: int) -> list[int]:
        """Prefills a request into rows from ``first_row`` and samples each choice's first
        token; the rows of the choices that finished at once."""
        adapter = generation.sequences[0].adapter
        logits = base.decoder.prefill(first_row, generation.prompt, RowAdapters.of([adapter]))
        for index, sequence in enumerate(generation.sequences):
            if index:
                base.decoder.copy_row(first_row, first_row + index)
            base.active.append((generation, sequence))
            base.row_adapters.append(adapter)
        generation.running = len(generation.sequences)
        return [
            first_row + i
            for i, sequence in enumerate(generation.sequences)
            if self._advance(sequence, logits)
        ]

    def _advance(self, sequence: _Sequence, logits: torch.Tensor) -> bool:
        """Samples one token for a sequence; True when it has finished."""
        token = next_token(logits, sequence.params, sequence.generator)
        sequence.last = token
        if token in sequence.stop_ids:
            self._finish(sequence, "stop")
            return True
        sequence.generated += 1
        delta = sequence.stream.push(token)
        if delta:
            sequence.sink.token(delta)
        if sequence.stream.stopped:
            self._finish(sequence, "stop")
            return True
        if sequence.generated >= sequence.params.max_tokens:
            self._finish(sequence, "length")
            return True
        return False

    @staticmethod
    def _finish(sequence: _Sequence, reason: str) -> None:
        tail = sequence.stream.flush()
        if tail:
            sequence.sink.token(tail)
        sequence.sink.finish(reason, sequence.generated)

    def _drop_cancelled(self, base: _Base) -> None:
        rows = [row for row, (g, s) in enumerate(base.active) if g.cancelled or s.cancelled]
        for row in rows:
            _, sequence = base.active[row]
            sequence.sink.finish("cancelled", sequence.generated)
        self._release(base, rows)

    def _release(self, base: _Base, rows: list[int]) -> None:
        """Removes finished rows, moving the last active row into each freed one."""
        for row in sorted(rows, reverse=True):
            generation, _ = base.active[row]
            last = len(base.active) - 1
            if row != last:
                base.active[row] = base.active[last]
                base.decoder.move(last, row)
                base.row_adapters.move(last, row)
            base.active.pop()
            base.row_adapters.pop()
            generation.running -= 1
            if not generation.running:
                with self._lock:
                    self._unpin(base, generation)

    def _unpin(self, base: _Base, generation: Generation) -> None:
        """Called with the lock held when a request leaves; an adapter kept over the limit
        only because it was in use is evicted now."""
        adapter = generation.sequences[0].adapter
        if adapter is None:
            return
        count = base.pinned.get(adapter.key, 0) - 1
        if count > 0:
            base.pinned[adapter.key] = count
        else:
            base.pinned.pop(adapter.key, None)
            self._evict(base)

    def _unload_idle(self) -> None:
        """Called with the lock held: frees caches and unloads base models left idle."""
        now = self._clock()
        for path, base in list(self._bases.items()):
            if base.pending or base.active or base.leases:
                continue
            base.decoder.release_cache()
            base.row_adapters.clear()
            if now - base.last_used >= self.base_idle_seconds:
                del self._bases[path]
                log.info("unloaded idle base model %s", path)

    def _fail_all(self, base: _Base, error: BaseException) -> None:
        with self._lock:
            pending = list(base.pending)
            base.pending.clear()
        for generation in {id(g): g for g, _ in base.active}.values():
            pending.append(generation)
        base.active.clear()
        base.row_adapters.clear()
        base.decoder.release_cache()
        for generation in pending:
            with self._lock:
                self._unpin(base, generation)
            for sequence in generation.sequences:
                sequence.sink.fail(error)

    def _abandon_all(self) -> None:
        for base in self._bases.values():
            running = {id(g): g for g, _ in base.active}
            for generation in [*base.pending, *running.values()]:
                generation.cancel()
                for sequence in generation.sequences:
                    sequence.sink.finish("cancelled", sequence.generated)
            base.pending.clear()
            base.active.clear()
            base.row_adapters.clear()
