"""Benchmark: from submitting a fine-tuning job to its first training step, against the time a
TRL script takes from launch to its first step, side by side on the same machine.

* **tunesmith**: a real ``tunesmith serve`` (a subprocess, fresh data directory, the bundled
  SmolLM2-135M-Instruct already converted in its model cache, as after the first job). The
  clock starts just before ``client.fine_tuning.jobs.create`` and stops at the creation time of
  the job's first ``metrics`` event (event ids carry microsecond timestamps), so it covers the
  request, file validation against the base model, queueing, the claim, the job process, loading
  model and data, and one LoRA step. Measured with the worker's warm spare (the default) and
  without it (``TUNESMITH_WORKER_WARM_SPARE=false``: a process started per job).
* **trl**: ``python script.py`` with ``SFTTrainer`` on the same file and model (LoRA, same
  targets), from launch until its first optimizer step ends: what a user of a training script
  waits after pressing enter.

    .venv/bin/python bench/job_latency.py [--repeats 3]

The last line printed is one JSON object; ``first_step_latency_ratio`` = tunesmith (warm) ÷ TRL
(below 1: tunesmith starts training sooner).
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DATA = ROOT / "examples" / "pirate" / "train.jsonl"
KEY = "tsk-bench-admin-4Hc8Nq2Wv6Jx9Ty3"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

TRL_SCRIPT = """
import json, sys, time
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

model_dir, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(line) for line in open(data)]
dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")

class FirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        print("FIRST_STEP", time.time(), flush=True)
        control.should_training_stop = True

config = SFTConfig(output_dir=out, per_device_train_batch_size=1, max_steps=1,
                   learning_rate=1e-3, save_strategy="no", report_to="none", use_cpu=True,
                   logging_steps=1, assistant_only_loss=False, dataloader_num_workers=0)
trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                     peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=%r,
                                            task_type="CAUSAL_LM"),
                     callbacks=[FirstStep()])
trainer.train()
"""


def event_time(event_id: str) -> float:
    """Seconds since the epoch encoded in a tunesmith id (10 base-36 digits of microseconds)."""
    return int(event_id.split("-", 1)[1][:10], 36) / 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bundled_model_cache() -> Path:
    from tunesmith.catalog.models import BUNDLED, materialize

    cache = ROOT / "bench" / "out" / "model-cache"
    return materialize(BUNDLED, cache)


def measure_tunesmith(model_dir: Path, repeats: int, *, warm_spare: bool) -> list[float]:
    import openai

    with tempfile.TemporaryDirectory() as home_text:
        home = Path(home_text)
        (home / "models").mkdir()
        (home / "models" / model_dir.name).symlink_to(model_dir, target_is_directory=True)
        port = free_port()
        env = os.environ | {
            "TUNESMITH_HOME": str(home),
            "TUNESMITH_ADMIN_KEY": KEY,
            "TUNESMITH_PORT": str(port),
            "TUNESMITH_WORKER_WARM_SPARE": "true" if warm_spare else "false",
            "PYTHONWARNINGS": "ignore",
        }
        log = (home / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "tunesmith", "serve"], env=env, stdout=log, stderr=log
        )
        try:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=5
            )
            wait_until_up(port, server)
            training = client.files.create(file=DATA.open("rb"), purpose="fine-tune").id
            time.sleep(8)  # let start-up finish (tokenizer warm-up, the spare's imports)
            latencies = []
            for _ in range(repeats):
                started = time.time()
                job = client.fine_tuning.jobs.create(
                    model=model_dir.name,
                    training_file=training,
                    method={
                        "type": "supervised",
                        "supervised": {"hyperparameters": {"n_epochs": 1}},
                    },
                )
                first = wait_first_metrics(client, job.id)
                latencies.append(event_time(first) - started)
                client.fine_tuning.jobs.cancel(job.id)
                wait_idle(client, job.id)
                time.sleep(6)  # the next spare's imports, as between a team's submissions
            return latencies
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()


def wait_until_up(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def wait_first_metrics(client: Any, job_id: str) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status == "failed":
            raise SystemExit(f"job failed: {job.error}")
        for event in client.fine_tuning.jobs.list_events(job_id, limit=50).data:
            if event.type == "metrics" and event.data["step"] == 1:
                return str(event.id)
        time.sleep(0.02)
    raise SystemExit("no training step within five minutes")


def wait_idle(client: Any, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = client.fine_tuning.jobs.list_events(job_id, limit=3).data
        if any(e.message.startswith("Training stopped") for e in events):
            return
        time.sleep(0.1)


def measure_trl(model_dir: Path, repeats: int) -> list[float]:
    latencies = []
    with tempfile.TemporaryDirectory() as out:
        script = Path(out) / "sft.py"
        script.write_text(TRL_SCRIPT % TARGETS)
        for _ in range(repeats):
            started = time.time()
            done = subprocess.run(
                [sys.executable, str(script), str(model_dir), str(DATA), out],
                capture_output=True,
                text=True,
                env=os.environ | {"PYTHONWARNINGS": "ignore"},
            )
            marks = [line for line in done.stdout.splitlines() if line.startswith("FIRST_STEP")]
            if not marks:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit("the TRL script did not reach a step")
            latencies.append(float(marks[0].split()[1]) - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = bundled_model_cache()
    warm = measure_tunesmith(model_dir, args.repeats, warm_spare=True)
    cold = measure_tunesmith(model_dir, args.repeats, warm_spare=False)
    trl = measure_trl(model_dir, args.repeats)
    for name, values in (
        ("tunesmith (warm spare)", warm),
        ("tunesmith (cold)", cold),
        ("TRL script", trl),
    ):
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:>24}: median {statistics.median(values):6.2f} s  ({shown})")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": model_dir.name,
        "repeats": args.repeats,
        "tunesmith_warm_s": round(statistics.median(warm), 3),
        "tunesmith_cold_s": round(statistics.median(cold), 3),
        "trl_script_s": round(statistics.median(trl), 3),
        "first_step_latency_ratio": round(statistics.median(warm) / statistics.median(trl), 3),
        "cold_first_step_latency_ratio": round(statistics.median(cold) / statistics.median(trl), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
