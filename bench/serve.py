"""Benchmark: serving SmolLM2-135M through tunesmith's API against plain Hugging Face
``generate``, side by side in one run on the same machine.

* **baseline**: the prompts run one by one through ``model.generate`` (greedy), what a user
  would script; and one request at a time, the same way.
* **tunesmith**: a real ``tunesmith serve`` (a subprocess, fresh data directory, the bundled
  model already converted), called over HTTP with streamed chat completions:
  - 16 concurrent streams on the base model: aggregate tokens/s, time to first token and
    inter-token latency (p50/p95);
  - one stream at a time: tokens/s, against one-by-one ``generate`` (what the API costs);
  - 16 streams spread over 8 deployments of 8 different LoRA adapters (r=8, every projection),
    against 16 streams on one adapter;
  - the server's resident memory after each adapter deployment, against the adapter's size,
    and the time from ``POST /v1/deployments`` to a first answer with the base resident.

Adapters are random (PEFT layout, saved by tunesmith's LoRA code) and registered as
fine-tuned models in the server's database: training eight of them would take ten minutes and
measure nothing more. Every request is greedy with the same ``max_tokens``; answers stop early
only at the model's end-of-turn token, for both sides alike.

    .venv/bin/python bench/serve.py [--tokens 64] [--streams 16]

The last line printed is one JSON object; ``*_ratio`` = tunesmith ÷ baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

KEY = "tsk-bench-admin-4Hc8Nq2Wv6Jx9Ty3"
TOPICS = [
    "a lighthouse keeper", "a lost robot", "the first snow", "a pirate's parrot",
    "a quiet library", "a mountain village", "an old violin", "a desert caravan",
    "a city at night", "a stubborn goat", "a river journey", "a broken clock",
    "a summer storm", "a chess match", "a baker's morning", "a forgotten letter",
]  # fmt: skip


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % 16]}."}]
        for i in range(n)
    ]


def bundled_model_cache() -> Path:
    from tunesmith.catalog.models import BUNDLED, materialize

    return materialize(BUNDLED, ROOT / "bench" / "out" / "model-cache")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the baseline ------------------------------------------------------------------------------


def baseline(
    model_dir: Path, conversations: list[list[dict[str, str]]], tokens: int
) -> dict[str, Any]:
    """One by one through ``generate``: tokens/s and per-request seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="sdpa")
    model.eval()
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2)  # warm-up
    produced, started = 0, time.perf_counter()
    for messages in conversations:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
        produced += out.shape[1] - ids.shape[1]
    seconds = time.perf_counter() - started
    return {"tokens": produced, "seconds": seconds, "tokens_per_s": produced / seconds}


# -- the server --------------------------------------------------------------------------------


class Server:
    def __init__(self, home: Path, model_dir: Path) -> None:
        (home / "models").mkdir(parents=True)
        (home / "models" / model_dir.name).symlink_to(model_dir, target_is_directory=True)
        self.home = home
        self.port = free_port()
        env = os.environ | {
            "TUNESMITH_HOME": str(home),
            "TUNESMITH_ADMIN_KEY": KEY,
            "TUNESMITH_PORT": str(self.port),
            "TUNESMITH_EMBEDDED_WORKER": "false",
            "TUNESMITH_SERVING_MAX_BATCH": "16",
            "TUNESMITH_SERVING_MAX_ADAPTERS": "16",
            "PYTHONWARNINGS": "ignore",
        }
        self.log = (home / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunesmith", "serve"], env=env, stdout=self.log, stderr=self.log
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        import httpx

        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the server did not start; see {home / 'server.log'}")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()

    def deploy(self, name: str, model: str) -> None:
        import httpx

        response = httpx.post(
            f"{self.url}/v1/deployments",
            json={"name": name, "model": model, "content_filter": True},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        response.raise_for_status()


def make_adapters(model_dir: Path, root: Path, count: int) -> list[Path]:
    import torch
    from transformers import AutoTokenizer

    from tunesmith.catalog.models import load_causal_lm
    from tunesmith.catalog.spec import DEFAULT_LORA_TARGET_MODULES
    from tunesmith.training.lora import apply_lora, lora_layers, save_adapter

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    folders = []
    for i in range(count):
        model = load_causal_lm(model_dir)
        apply_lora(model, DEFAULT_LORA_TARGET_MODULES, rank=8, alpha=16.0, dropout=0.0)
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                for part in (layer.lora_A, layer.lora_B):
                    part.weight.copy_(torch.randn(part.weight.shape, generator=generator) * 0.01)
        folder = root / f"adapter-{i}"
        folder.mkdir(parents=True)
        save_adapter(
            model,
            folder,
            base_model=str(model_dir),
            rank=8,
            alpha=16.0,
            dropout=0.0,
            target_modules=DEFAULT_LORA_TARGET_MODULES,
        )
        tokenizer.save_pretrained(str(folder))
        folders.append(folder)
    return folders


def register(home: Path, base: str, folders: list[Path]) -> list[str]:
    """Adds the adapters as fine-tuned models to the server's database."""
    from tunesmith.store.db import make_engine, make_session_factory, transaction
    from tunesmith.store.tables import ModelRow

    engine = make_engine(f"sqlite:///{home / 'tunesmith.db'}")
    ids = [f"ft:{base}:default:bench{i}:ftjob-bench{i}" for i in range(len(folders))]
    with transaction(make_session_factory(engine)) as session:
        for i, (model_id, folder) in enumerate(zip(ids, folders, strict=True)):
            session.add(
                ModelRow(
                    id=model_id,
                    project_id="proj_default",
                    job_id=f"ftjob-bench{i}",
                    created_at=int(time.time()),
                    base_model=base,
                    kind="lora",
                    weights_of=base,
                    path=str(folder),
                )
            )
    engine.dispose()
    return ids


# -- clients -----------------------------------------------------------------------------------


def stream_one(
    url: str, model: str, messages: list[dict[str, str]], tokens: int, start: threading.Event
) -> dict[str, Any]:
    """One streamed request; times of its first and later content chunks."""
    import httpx

    body = {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start.wait()
    began = time.perf_counter()
    stamps: list[float] = []
    usage: dict[str, int] = {}
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=600,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    return {"began": began, "stamps": stamps, "completion_tokens": usage["completion_tokens"]}


def concurrent(
    url: str, models: list[str], conversations: list[Any], tokens: int
) -> dict[str, Any]:
    """All requests at once, one thread each; aggregate tokens/s and latencies."""
    results: list[dict[str, Any]] = [{} for _ in conversations]
    start = threading.Event()

    def run(i: int) -> None:
        results[i] = stream_one(url, models[i % len(models)], conversations[i], tokens, start)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conversations))]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    began = time.perf_counter()
    start.set()
    for thread in threads:
        thread.join()
    seconds = max(r["stamps"][-1] for r in results if r["stamps"]) - began
    produced = sum(r["completion_tokens"] for r in results)
    ttft = [r["stamps"][0] - r["began"] for r in results if r["stamps"]]
    gaps = [b - a for r in results for a, b in zip(r["stamps"], r["stamps"][1:], strict=False)]
    return {
        "tokens": produced,
        "seconds": seconds,
        "tokens_per_s": produced / seconds,
        "ttft_p50_s": percentile(ttft, 0.5),
        "ttft_p95_s": percentile(ttft, 0.95),
        "itl_p50_s": percentile(gaps, 0.5),
        "itl_p95_s": percentile(gaps, 0.95),
    }


def one_by_one(url: str, model: str, conversations: list[Any], tokens: int) -> dict[str, Any]:
    produced, started = 0, time.perf_counter()
    for messages in conversations:
        ready = threading.Event()
        ready.set()
        produced += stream_one(url, model, messages, tokens, ready)["completion_tokens"]
    seconds = time.perf_counter() - started
    return {"tokens": produced, "seconds": seconds, "tokens_per_s": produced / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--single", type=int, default=4, help="requests in the one-stream runs")
    args = parser.parse_args()
    model_dir = bundled_model_cache()
    conversations = prompts(args.streams)

    print("baseline: one by one through generate …", flush=True)
    hf = baseline(model_dir, conversations, args.tokens)
    hf_single = baseline(model_dir, conversations[: args.single], args.tokens)

    with tempfile.TemporaryDirectory() as home_text:
        home = Path(home_text)
        server = Server(home, model_dir)
        try:
            server.deploy("base", model_dir.name)
            one_by_one(server.url, "base", conversations[:1], 4)  # warm-up
            rss_base = server.rss_mb()
            print("tunesmith: 16 streams, one stream …", flush=True)
            many = concurrent(server.url, ["base"], conversations, args.tokens)
            single = one_by_one(server.url, "base", conversations[: args.single], args.tokens)

            folders = make_adapters(model_dir, home / "adapters", 8)
            ids = register(home, model_dir.name, folders)
            adapter_mb = sum(f.stat().st_size for f in folders[0].glob("adapter_model.*")) / 2**20
            rss_before = server.rss_mb()
            deploy_seconds, rss_after = [], []
            for i, model_id in enumerate(ids):
                started = time.perf_counter()
                server.deploy(f"tuned-{i}", model_id)
                one_by_one(server.url, f"tuned-{i}", conversations[:1], 1)
                deploy_seconds.append(time.perf_counter() - started)
                rss_after.append(server.rss_mb())
            print("tunesmith: 8 adapters at once, one adapter …", flush=True)
            eight = concurrent(
                server.url, [f"tuned-{i}" for i in range(8)], conversations, args.tokens
            )
            one = concurrent(server.url, ["tuned-0"], conversations, args.tokens)
        finally:
            server.close()

    growth = [(b - a) for a, b in zip([rss_before, *rss_after], rss_after, strict=False)]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": model_dir.name,
        "max_tokens": args.tokens,
        "streams": args.streams,
        "hf_one_by_one_tokens_per_s": round(hf["tokens_per_s"], 2),
        "tunesmith_streams_tokens_per_s": round(many["tokens_per_s"], 2),
        "streams_tokens_per_s_ratio": round(many["tokens_per_s"] / hf["tokens_per_s"], 2),
        "ttft_p50_s": round(many["ttft_p50_s"], 3),
        "ttft_p95_s": round(many["ttft_p95_s"], 3),
        "itl_p50_s": round(many["itl_p50_s"], 4),
        "itl_p95_s": round(many["itl_p95_s"], 4),
        "hf_single_tokens_per_s": round(hf_single["tokens_per_s"], 2),
        "tunesmith_single_tokens_per_s": round(single["tokens_per_s"], 2),
        "single_stream_tokens_per_s_ratio": round(
            single["tokens_per_s"] / hf_single["tokens_per_s"], 2
        ),
        "one_adapter_tokens_per_s": round(one["tokens_per_s"], 2),
        "eight_adapters_tokens_per_s": round(eight["tokens_per_s"], 2),
        "eight_adapters_tokens_per_s_ratio": round(eight["tokens_per_s"] / one["tokens_per_s"], 2),
        "server_rss_with_base_mb": round(rss_base, 1),
        "adapter_file_mb": round(adapter_mb, 2),
        "rss_growth_per_deployment_mb_median": round(statistics.median(growth), 2),
        "rss_growth_8_deployments_mb": round(rss_after[-1] - rss_before, 1),
        "deploy_to_first_answer_s_median": round(statistics.median(deploy_seconds), 3),
        "baseline_tokens": hf["tokens"],
        "tunesmith_tokens": many["tokens"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
