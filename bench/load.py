"""Load: a crowd of streamed chat clients against a real ``tunesmith serve``, on loopback.

Four runs, one after the other, on one server with a fresh data directory (the bundled model
already converted, never loaded):

* **cold**: a new deployment is created and 64 clients start streaming at once, for 60 s, while
  the server loads the model for the first time;
* **capacity**: 16 clients (the engine's batch) on the warm deployment for 40 s: the engine's
  capacity in tokens/s;
* **overload**: 64 clients (4× the batch) for 60 s on the same deployment: goodput must stay
  within 20% of the capacity (refusals must be cheap);
* **mixed**: 16 clients over 4 deployments (one in each of 4 new projects) for 40 s, 4 on each,
  with mixed keys (the project's owner, contributor and reader keys by ``model``, and the
  deployment's own key on its scoring URI);
  one deployment has a low ``requests_per_minute`` so that its limit is seen enforced.

Every client behaves like the official ``openai`` client: streamed requests with a small
``max_tokens``, and on 429 or 503 it waits what ``retry-after`` says and tries again. Each run
reports requests, tokens/s (goodput: the tokens of answers that end well, streamed within the
run), latency p50/p95/p99, time to first
token, 429s (and whether each carried ``retry-after`` and the ``x-ratelimit-*`` headers), 5xx and
connection errors; the script exits non-zero when any 5xx, any connection error or any 429
without its headers is seen, or when goodput under overload is below 80% of capacity.

    .venv/bin/python bench/load.py [--seconds 60] [--tokens 32]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import KEY, TOPICS, Server, bundled_model_cache, percentile

RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests")


@dataclass
class Tally:
    """What one run's clients saw."""

    started: float = field(default_factory=time.perf_counter)
    ok: int = 0
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    refused: int = 0
    refused_without_headers: int = 0
    other_4xx: dict[int, int] = field(default_factory=dict)
    server_errors: dict[int, int] = field(default_factory=dict)
    stream_errors: int = 0
    connection_errors: int = 0
    first_error: str | None = None

    def report(self, window: float, seconds: float) -> dict[str, Any]:
        """``window``: how long clients started requests; ``seconds``: until the last ended.
        Tokens/s: the tokens of answers that ended well, streamed inside the window, over it;
        answers and latencies: those that ended inside it."""

        def p(q: float, values: list[float]) -> float | None:
            return round(percentile(values, q), 3) if values else None

        return {
            "window_s": round(window, 1),
            "seconds_until_all_ended": round(seconds, 1),
            "answers": self.ok,
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / window, 2),
            "latency_p50_s": p(0.5, self.latencies),
            "latency_p95_s": p(0.95, self.latencies),
            "latency_p99_s": p(0.99, self.latencies),
            "ttft_p50_s": p(0.5, self.ttfts),
            "ttft_p95_s": p(0.95, self.ttfts),
            "refused_429_503": self.refused,
            "refused_without_headers": self.refused_without_headers,
            "other_4xx": self.other_4xx,
            "server_errors_5xx": self.server_errors,
            "errors_in_stream": self.stream_errors,
            "connection_errors": self.connection_errors,
            "first_error": self.first_error,
        }


@dataclass(frozen=True)
class Caller:
    url: str
    """Where chat completions are posted."""
    key: str
    model: str | None
    """None on a scoring URI, which names the deployment itself."""


async def client(
    http: httpx.AsyncClient, caller: Caller, tokens: int, deadline: float, tally: Tally, topic: str
) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Tell me a story about {topic}."}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if caller.model is not None:
        body["model"] = caller.model
    headers = {"Authorization": f"Bearer {caller.key}"}
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        try:
            async with http.stream("POST", caller.url, json=body, headers=headers) as response:
                if response.status_code in (429, 503):
                    await response.aread()
                    tally.refused += 1
                    wait = response.headers.get("retry-after")
                    has_rate = all(h in response.headers for h in RATE_HEADERS)
                    if wait is None or (response.status_code == 429 and not has_rate):
                        tally.refused_without_headers += 1
                    await asyncio.sleep(min(float(wait or 1), 60.0))
                    continue
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    bucket = tally.server_errors if response.status_code >= 500 else tally.other_4xx
                    bucket[response.status_code] = bucket.get(response.status_code, 0) + 1
                    tally.first_error = tally.first_error or f"{response.status_code}: {text[:300]}"
                    await asyncio.sleep(1)
                    continue
                first: float | None = None
                used = 0
                pieces = in_window = 0
                failed = False
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        failed = True
                        tally.first_error = tally.first_error or json.dumps(chunk)[:300]
                        break
                    if first is None and chunk["choices"]:
                        first = time.perf_counter()
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        pieces += 1
                        in_window += time.perf_counter() <= deadline
                    if chunk.get("usage"):
                        used = chunk["usage"]["completion_tokens"]
                ended = time.perf_counter()
                if failed:
                    tally.stream_errors += 1
                    continue
                # Goodput: the tokens of answers that end well, as far as they streamed inside
                # the window (an answer cut by the window counts its share).
                tally.tokens += round(used * in_window / pieces) if pieces else 0
                if ended <= deadline:
                    tally.ok += 1
                    tally.latencies.append(ended - began)
                    if first is not None:
                        tally.ttfts.append(first - began)
        except httpx.HTTPError as exc:
            tally.connection_errors += 1
            tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(1)


async def run(callers: list[Caller], tokens: int, seconds: float) -> dict[str, Any]:
    tally = Tally()
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=len(callers) + 8, max_keepalive_connections=len(callers))
    timeout = httpx.Timeout(120.0, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        await asyncio.gather(
            *(
                client(http, c, tokens, deadline, tally, TOPICS[i % len(TOPICS)])
                for i, c in enumerate(callers)
            )
        )
    return tally.report(seconds, time.perf_counter() - tally.started)


def measured(name: str, runs: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    result = asyncio.run(runs)
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return result


def admin(server: Server, method: str, path: str, **body: Any) -> dict[str, Any]:
    response = httpx.request(
        method,
        f"{server.url}{path}",
        json=body or None,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--crowd", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    model_dir = bundled_model_cache()
    chat = "/v1/chat/completions"
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": model_dir.name,
        "max_tokens": args.tokens,
    }
    with tempfile.TemporaryDirectory() as home_text:
        server = Server(Path(home_text), model_dir)
        try:
            admin(server, "POST", "/v1/deployments", name="load", model=model_dir.name)
            crowd = [Caller(server.url + chat, KEY, "load")] * args.crowd
            print(f"cold: {args.crowd} clients on a new deployment …", flush=True)
            results["cold"] = measured("cold", run(crowd, args.tokens, args.seconds))
            print(f"capacity: {args.batch} clients …", flush=True)
            results["capacity"] = measured(
                "capacity", run(crowd[: args.batch], args.tokens, args.seconds * 2 / 3)
            )
            print(f"overload: {args.crowd} clients …", flush=True)
            results["overload"] = measured("overload", run(crowd, args.tokens, args.seconds))

            mixed = []
            for i in range(4):  # one deployment per model and project: four projects
                project = admin(server, "POST", "/v1/projects", name=f"load-{i}")
                keys = [
                    admin(server, "POST", f"/v1/projects/{project['id']}/api_keys", role=role)
                    for role in ("owner", "contributor", "reader")
                ]
                owner = {"Authorization": f"Bearer {keys[0]['value']}"}
                made = httpx.post(
                    f"{server.url}/v1/deployments",
                    json={
                        "name": f"mix-{i}",
                        "model": model_dir.name,
                        "rate_limits": {"requests_per_minute": 12} if i == 3 else None,
                    },
                    headers=owner,
                    timeout=60,
                )
                made.raise_for_status()
                own = httpx.get(
                    f"{server.url}/v1/deployments/mix-{i}/keys", headers=owner, timeout=60
                ).json()
                mixed.append(Caller(made.json()["scoring_uri"] + chat, own["primary_key"], None))
                mixed += [Caller(server.url + chat, key["value"], f"mix-{i}") for key in keys]
            print(f"mixed: {len(mixed)} clients over 4 deployments and 16 keys …", flush=True)
            results["mixed"] = measured("mixed", run(mixed, args.tokens, args.seconds * 2 / 3))
            results["server_rss_mb"] = round(server.rss_mb(), 1)
        finally:
            server.close()
    capacity = results["capacity"]["tokens_per_s"]
    results["overload_goodput_ratio"] = round(results["overload"]["tokens_per_s"] / capacity, 3)
    print(json.dumps(results))
    bad = [
        f"{name}: {key}"
        for name in ("cold", "capacity", "overload", "mixed")
        for key in (
            "server_errors_5xx",
            "connection_errors",
            "refused_without_headers",
            "errors_in_stream",
        )
        if results[name][key]
    ]
    if results["overload_goodput_ratio"] < 0.8:
        bad.append(f"goodput under overload is {results['overload_goodput_ratio']} of capacity")
    if bad:
        print("FAILED: " + "; ".join(bad), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
