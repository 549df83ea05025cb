"""The rate limiter: requests, tokens and concurrency limits trip with OpenAI's headers and a
``retry-after``, the one-minute window frees capacity as time passes, ``finish`` corrects the
estimate and frees the slot, and keys are independent. Time is passed in, never slept."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.helpers import run_coroutine
from tunesmith.errors import RateLimited
from tunesmith.ratelimits import RateLimiter, RateLimits, format_duration

WIDE = 1_000_000


def limits(rpm: int = WIDE, tpm: int = WIDE, concurrent: int = WIDE) -> RateLimits:
    return RateLimits(
        requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrent_requests=concurrent
    )


def test_admitted_requests_carry_the_openai_headers() -> None:
    limiter = RateLimiter()
    admission = limiter.admit("dep", limits(rpm=10, tpm=1000), 100, now=1000.0)
    assert admission.headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-requests": "60s",
        "x-ratelimit-reset-tokens": "60s",
    }
    later = limiter.admit("dep", limits(rpm=10, tpm=1000), 50, now=1020.5)
    assert later.headers["x-ratelimit-remaining-requests"] == "8"
    assert later.headers["x-ratelimit-remaining-tokens"] == "850"
    assert later.headers["x-ratelimit-reset-requests"] == "60s"  # the newest leaves last


def test_requests_per_minute_trips_with_retry_after() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=2)
    limiter.admit("dep", rules, 1, now=100.0).finish(1, now=100.1)
    limiter.admit("dep", rules, 1, now=130.0).finish(1, now=130.1)
    with pytest.raises(RateLimited) as raised:
        limiter.admit("dep", rules, 1, now=140.0)
    error = raised.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert "requests_per_minute is 2" in error.message
    assert "2 request(s) were made in the last minute" in error.message
    assert "PATCH /v1/deployments/" in error.message
    assert error.headers["retry-after"] == "20"  # the request of t=100 leaves at t=160
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-limit-requests"] == "2"
    assert error.headers["x-ratelimit-reset-requests"] == "50s"  # the one of t=130 leaves at 190
    # the window slides: at t=160 the first request no longer counts
    assert (
        limiter.admit("dep", rules, 1, now=160.0).headers["x-ratelimit-remaining-requests"] == "0"
    )


def test_a_refused_request_is_not_counted() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=1)
    limiter.admit("dep", rules, 1, now=0.0)
    for t in (1.0, 2.0, 3.0):
        with pytest.raises(RateLimited):
            limiter.admit("dep", rules, 1, now=t)
    limiter.admit("dep", rules, 1, now=60.0)  # only the first one was ever counted


def test_tokens_per_minute_trips_and_frees_as_the_window_slides() -> None:
    limiter = RateLimiter()
    rules = limits(tpm=1000)
    limiter.admit("dep", rules, 600, now=0.0)
    limiter.admit("dep", rules, 300, now=10.0)
    with pytest.raises(RateLimited) as raised:
        limiter.admit("dep", rules, 200, now=20.0)
    error = raised.value
    assert "tokens_per_minute is 1000, 900 were used in the last minute" in error.message
    assert "estimated at 200" in error.message
    assert error.headers["retry-after"] == "40"  # the 600 of t=0 leave at t=60
    assert error.headers["x-ratelimit-remaining-tokens"] == "100"
    assert error.headers["x-ratelimit-reset-tokens"] == "50s"
    assert limiter.admit("dep", rules, 100, now=20.0).headers["x-ratelimit-remaining-tokens"] == "0"
    admitted = limiter.admit("dep", rules, 200, now=60.0)
    assert admitted.headers["x-ratelimit-remaining-tokens"] == "400"  # 300 + 100 + 200 counted


def test_retry_after_waits_for_as_many_tokens_as_needed() -> None:
    limiter = RateLimiter()
    rules = limits(tpm=1000)
    for t, tokens in ((0.0, 300), (5.0, 300), (30.0, 300)):
        limiter.admit("dep", rules, tokens, now=t)
    with pytest.raises(RateLimited) as raised:
        limiter.admit("dep", rules, 500, now=31.0)
    # 900 used + 500 asked = 400 too many: the first two must leave, the second at t=65
    assert raised.value.headers["retry-after"] == "34"


def test_a_request_larger_than_the_whole_limit_is_told_so() -> None:
    limiter = RateLimiter()
    with pytest.raises(RateLimited) as raised:
        limiter.admit("dep", limits(tpm=1000), 1001, now=0.0)
    assert "more than the whole tokens_per_minute limit of 1000" in raised.value.message
    assert "lower max_tokens" in raised.value.message
    assert raised.value.headers["retry-after"] == "60"


def test_concurrency_trips_and_finish_frees_the_slot() -> None:
    limiter = RateLimiter()
    rules = limits(concurrent=2)
    first = limiter.admit("dep", rules, 10, now=0.0)
    limiter.admit("dep", rules, 10, now=0.0)
    with pytest.raises(RateLimited) as raised:
        limiter.admit("dep", rules, 10, now=0.5)
    assert "max_concurrent_requests is 2 and 2 request(s) are in flight" in raised.value.message
    assert raised.value.headers["retry-after"] == "1"
    first.finish(10, now=1.0)
    first.finish(10, now=1.0)  # idempotent: frees one slot, not two
    limiter.admit("dep", rules, 10, now=1.0)
    with pytest.raises(RateLimited):
        limiter.admit("dep", rules, 10, now=1.0)


def test_finish_replaces_the_estimate_by_the_actual_tokens() -> None:
    limiter = RateLimiter()
    rules = limits(tpm=1000)
    admission = limiter.admit("dep", rules, 900, now=0.0)  # prompt + max_tokens
    with pytest.raises(RateLimited):
        limiter.admit("dep", rules, 200, now=1.0)
    admission.finish(150, now=2.0)  # the answer was short
    admission.finish(900, now=2.5)  # a second call changes nothing
    headers = limiter.admit("dep", rules, 200, now=3.0).headers
    assert headers["x-ratelimit-remaining-tokens"] == "650"


def test_finishing_after_the_window_passed_changes_no_count() -> None:
    limiter = RateLimiter()
    rules = limits(tpm=1000)
    long_one = limiter.admit("dep", rules, 500, now=0.0)
    limiter.admit("dep", rules, 300, now=50.0)
    long_one.finish(900, now=70.0)  # already out of the window: it must not count again
    assert limiter.admit("dep", rules, 0, now=70.0).headers["x-ratelimit-remaining-tokens"] == (
        "700"
    )


def test_every_limit_hit_is_named_at_once() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=1, tpm=100, concurrent=1)
    limiter.admit("dep", rules, 100, now=0.0)
    with pytest.raises(RateLimited) as raised:
        limiter.admit("dep", rules, 50, now=10.0)
    message = raised.value.message
    assert "requests_per_minute" in message
    assert "tokens_per_minute" in message
    assert "max_concurrent_requests" in message
    assert raised.value.headers["retry-after"] == "50"


def test_keys_are_independent() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=1, concurrent=1)
    limiter.admit("a", rules, 1, now=0.0)
    with pytest.raises(RateLimited):
        limiter.admit("a", rules, 1, now=0.0)
    assert limiter.admit("b", rules, 1, now=0.0).headers["x-ratelimit-remaining-requests"] == "0"


def test_limits_changed_between_requests_apply_at_once() -> None:
    limiter = RateLimiter()
    for t in range(5):
        limiter.admit("dep", limits(rpm=10), 1, now=float(t))
    with pytest.raises(RateLimited) as raised:
        limiter.admit("dep", limits(rpm=3), 1, now=10.0)
    # 5 counted, 3 allowed: the third oldest (t=2) must leave, at t=62
    assert raised.value.headers["retry-after"] == "52"
    assert raised.value.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_negative_estimate_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        RateLimiter().admit("dep", limits(), -1, now=0.0)


def test_concurrent_admissions_never_exceed_the_limit() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=50)
    admitted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        for _ in range(20):
            try:
                limiter.admit("dep", rules, 1, now=5.0).finish(1, now=5.0)
            except RateLimited:
                with lock:
                    refused.append(1)
            else:
                with lock:
                    admitted.append(1)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 50 and len(refused) == 110


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (-1.0, "0s"), (0.02, "20ms"), (0.0004, "1ms"), (1.5, "1.5s"), (60.0, "60s")],
)
def test_durations_are_written_as_openai_does(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_reservation_holds_a_slot_before_its_tokens_are_known() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=10, tpm=1000, concurrent=1)
    reserved = limiter.reserve("dep", rules, now=0.0)
    with pytest.raises(RateLimited) as raised:  # refused before any work: the slot is taken
        limiter.reserve("dep", rules, now=0.1)
    assert "max_concurrent_requests is 1" in raised.value.message
    reserved.charge(400, now=0.2)
    assert reserved.headers["x-ratelimit-remaining-tokens"] == "600"
    assert reserved.headers["x-ratelimit-remaining-requests"] == "9"
    reserved.finish(300, now=1.0)
    assert limiter.admit("dep", rules, 700, now=2.0).headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_charge_over_the_tokens_limit_is_refused_and_not_counted() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=2, tpm=1000, concurrent=1)
    limiter.admit("dep", rules, 800, now=0.0).finish(800, now=0.0)
    reserved = limiter.reserve("dep", rules, now=1.0)
    with pytest.raises(RateLimited) as raised:
        reserved.charge(300, now=1.0)
    assert "tokens_per_minute is 1000, 800 were used" in raised.value.message
    assert raised.value.headers["retry-after"] == "59"
    reserved.finish(0, now=1.0)  # the caller's clean-up after the refusal changes nothing
    # its slot is free and it was not counted: one more request fits in the minute's two
    headers = limiter.admit("dep", rules, 100, now=2.0).headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-remaining-tokens"] == "100"


def test_a_busy_deployment_admits_waiting_requests_in_turn() -> None:
    """Over ``max_concurrent_requests`` a request waits for a slot instead of being refused
    (a refused client retries, and a storm of retries takes the engine's time); one more
    waiter than the cap, or a refusal for another limit, is refused at once."""
    limiter = RateLimiter()
    rules = limits(concurrent=1)

    async def scenario() -> None:
        held = limiter.reserve("dep", rules, now=time.time())
        waiter = asyncio.create_task(limiter.wait_for_room("dep", rules, wait_seconds=30))
        await asyncio.sleep(0.1)
        assert not waiter.done()  # waiting, not refused
        with pytest.raises(RateLimited) as crowd:  # the cap of waiters is the cap in flight
            await limiter.wait_for_room("dep", rules, wait_seconds=30)
        assert crowd.value.headers["retry-after"] == "1"
        held.finish(1, now=time.time())
        admitted = await asyncio.wait_for(waiter, timeout=10)
        with pytest.raises(RateLimited):  # no slot came free within its wait
            await limiter.wait_for_room("dep", rules, wait_seconds=0.1)
        admitted.finish(1, now=time.time())
        (await limiter.wait_for_room("dep", rules, wait_seconds=0)).finish(1, now=time.time())

    run_coroutine(scenario())


def test_a_request_over_another_limit_does_not_wait() -> None:
    limiter = RateLimiter()
    rules = limits(rpm=1, concurrent=1)
    limiter.reserve("dep", rules, now=time.time()).finish(1, now=time.time())
    started = time.monotonic()
    with pytest.raises(RateLimited) as refused:
        run_coroutine(limiter.wait_for_room("dep", rules, wait_seconds=30))
    assert "requests_per_minute is 1" in refused.value.message
    assert time.monotonic() - started < 10  # refused at once, not after its wait


def test_a_request_refused_after_its_reservation_is_not_counted() -> None:
    """A request reserved and then refused before it was served (its prompt too long, or
    blocked) is withdrawn: neither its slot nor its place in the minute stays taken."""
    limiter = RateLimiter()
    rules = limits(rpm=1, concurrent=1)
    limiter.reserve("dep", rules, now=0.0).withdraw()
    served = limiter.reserve("dep", rules, now=1.0)  # the minute's one request is still free
    served.withdraw()
    served.finish(5, now=2.0)  # after a withdrawal, nothing more happens
    assert limiter.admit("dep", rules, 3, now=3.0).headers["x-ratelimit-remaining-requests"] == "0"
