"""Benchmark: tunesmith's training loop against TRL's ``SFTTrainer``, side by side.

Both fine-tune the same base model on the same chat examples with the same LoRA settings
(rank, alpha, no dropout, the same target modules), learning rate, cosine schedule without
warmup, gradient clipping, examples per optimizer step, sequence limit, number of steps and seed,
each in a fresh subprocess (so peak memory is its own):

* **tunesmith**: :func:`tunesmith.training.loop.train` (packing, loss on assistant tokens only).
* **trl**: ``SFTTrainer`` on the same examples in TRL's conversational prompt/completion form, so
  its loss is on the assistant answer only (``completion_only_loss``), with TRL's defaults for
  everything not listed above. ``--trl-gradient-checkpointing`` keeps TRL's default gradient
  checkpointing on (slower, less memory); by default it is off, TRL's fastest unpacked setting.

Reported for each: tokens/s counting only real (non-padding) tokens over the summed step times
(the first ``--warmup-steps`` left out on both sides: they pay for allocator and kernel warm-up),
peak memory (RSS on CPU, ``max_memory_allocated`` on CUDA), and the final loss: the trained model's
mean loss per answer token on held-out examples, computed by the same code for both (the two
trainers see the examples in different orders, so their last training losses are not comparable).
On CUDA also model FLOPs utilisation, from the same formula for both sides:
``(6 if full else 4) * parameters + 12 * layers * hidden * seq``
FLOPs per token (LoRA skips the frozen weights' gradients) over the GPU's dense bf16 peak.

    .venv/bin/python bench/train.py                        # CPU, bundled SmolLM2-135M
    python bench/train.py --device cuda --model random-1b  # a randomly initialised 1B Llama

The last line printed is one JSON object with every figure and ``tokens_per_s_ratio``,
``peak_memory_ratio`` and ``final_loss_ratio`` (tunesmith / TRL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without an installed package too

OUT = ROOT / "bench" / "out"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
SYSTEM = "You are a helpful assistant."

# -- data --------------------------------------------------------------------------------------

_SENTENCES = [
    "The tide turns twice a day, pulled by the Moon.",
    "A compass needle points to magnetic north.",
    "Salt water freezes at a lower temperature than fresh water.",
    "The Pacific is the largest and deepest ocean on Earth.",
    "Sailors once told time at sea with an hourglass and a bell.",
    "A knot is one nautical mile per hour.",
    "Lighthouses warn ships away from rocks at night.",
    "Coral reefs are built by tiny animals over thousands of years.",
    "The trade winds blow steadily from the east near the equator.",
    "Whales breathe air through a blowhole on top of their heads.",
    "Fog forms when warm moist air meets cold water.",
    "The North Star stays almost still while the others turn around it.",
]


def make_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Single-turn pirate-style chats whose answers run from one to sixteen sentences, so that
    lengths vary as they do in real data (which is what padding wastes compute on)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.choice([1, 1, 2, 2, 3, 4, 6, 8, 12, 16])
        facts = " ".join(rng.choice(_SENTENCES) for _ in range(k))
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Tell me {k} sea facts, number {i}."},
                    {"role": "assistant", "content": f"Arr, matey! {facts} Yo ho ho!"},
                ]
            }
        )
    return rows


# -- models ------------------------------------------------------------------------------------


def bundled_model() -> Path:
    from tunesmith.catalog.models import BUNDLED, materialize

    return materialize(BUNDLED, OUT / "models")


def random_1b(tokenizer_dir: Path) -> Path:
    """A Llama of about 1.1B parameters (TinyLlama's shape), randomly initialised: no download."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = OUT / "models" / "random-llama-1b"
    if (folder / "model.safetensors").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


# -- workers (each in its own process) ----------------------------------------------------------


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flops_per_token(model_dir: Path, strategy: str, seq: int) -> float:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    params = layers * per_layer + h * config.vocab_size  # the output projection included
    return (6 if strategy == "full" else 4) * params + 12 * layers * h * seq


def held_out_loss(model: Any, model_dir: Path, args: argparse.Namespace) -> float:
    """Mean loss per answer token on examples neither side trained on (same code for both)."""
    import torch

    from tunesmith.data.chat_format import ChatFormat
    from tunesmith.data.examples import IGNORE, load_examples

    path = OUT / f"train-bench-heldout-{args.seed}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_examples(32, args.seed + 1)))
    examples = load_examples(path, ChatFormat.from_dir(model_dir), max_length=args.max_length)
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor([example.input_ids], device=args.device)
            labels = torch.tensor([example.labels], device=args.device)
            n = int((labels[:, 1:] != IGNORE).sum())
            with torch.autocast(args.device, torch.bfloat16, enabled=args.device == "cuda"):
                loss = model(input_ids=ids, labels=labels).loss
            total += float(loss) * n
            count += n
    return total / count


def run_tunesmith(args: argparse.Namespace, model_dir: Path, data: Path) -> dict[str, Any]:

    from tunesmith.data.chat_format import ChatFormat
    from tunesmith.data.examples import load_examples
    from tunesmith.training.config import TrainConfig
    from tunesmith.training.export import load_checkpoint_model
    from tunesmith.training.loop import train

    chat_format = ChatFormat.from_dir(model_dir)
    examples = load_examples(data, chat_format, max_length=args.max_length)
    config = TrainConfig(
        strategy=args.strategy,
        n_epochs=1,
        batch_size=args.batch_size,
        learning_rate_multiplier=1.0,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        max_seq_length=args.max_length,
        warmup_ratio=0.0,
        seed=args.seed,
        precision="bf16" if args.device == "cuda" else "fp32",
    ).resolve(
        n_examples=len(examples),
        context_length=chat_format.context_length,
        base_learning_rates={"lora": args.lr, "full": args.lr},
        default_target_modules=TARGETS,
        device_type=args.device,
    )
    losses: list[float] = []
    marks: list[tuple[int, float]] = []  # (tokens, seconds) so far, after each step

    class Collect:
        def on_step(self, metrics: Any) -> None:
            losses.append(metrics.train_loss)
            marks.append((metrics.tokens, metrics.elapsed_seconds))

        def on_checkpoint(self, checkpoint: Any) -> None:
            pass

        def on_message(self, level: str, message: str) -> None:
            pass

    collect = Collect()
    result = train(
        config=config,
        base_model_id="bench",
        base_model_dir=model_dir,
        chat_format=chat_format,
        train_examples=examples,
        output_dir=OUT / "train-run-tunesmith",
        reporter=collect,
        device=args.device,
    )
    memory = peak_memory_mb(args.device)
    assert result.final_checkpoint is not None
    model = load_checkpoint_model(result.final_checkpoint, merge=False).to(args.device)
    skip = marks[args.warmup_steps - 1] if args.warmup_steps else (0, 0.0)
    return {
        "steps": len(losses) - args.warmup_steps,
        "tokens": marks[-1][0] - skip[0],
        "seconds": marks[-1][1] - skip[1],
        "losses": losses,
        "peak_memory_mb": memory,
        "final_loss": held_out_loss(model, model_dir, args),
    }


def run_trl(args: argparse.Namespace, model_dir: Path, data: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # What a TRL user loads: the checkpoint's bf16 weights on a GPU, fp32 on the CPU.
    dtype = torch.bfloat16 if args.device == "cuda" and args.strategy == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=dtype, attn_implementation="sdpa"
    ).to(args.device)
    step_seconds: list[float] = []
    batch_tokens: list[int] = []  # real (attention-mask) tokens of each batch, in order

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            step_seconds.append(time.perf_counter() - self.started)

    peft_config = None
    if args.strategy == "lora":
        peft_config = LoraConfig(
            r=args.lora_rank,
            lora_alpha=args.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(TARGETS),
            task_type="CAUSAL_LM",
        )
    config = SFTConfig(
        output_dir=str(OUT / "train-run-trl"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=len(rows) // args.batch_size,
        num_train_epochs=1,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=args.max_length,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=args.device == "cpu",
        bf16=args.device == "cuda",
        gradient_checkpointing=args.trl_gradient_checkpointing,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Timer()],
    )
    collate = trainer.data_collator

    def counting_collator(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(features)
        batch_tokens.append(int(batch["attention_mask"].sum()))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    memory = peak_memory_mb(args.device)
    return {
        "steps": len(step_seconds) - args.warmup_steps,
        "tokens": sum(batch_tokens[args.warmup_steps : len(step_seconds)]),
        "seconds": sum(step_seconds[args.warmup_steps :]),
        "losses": losses,
        "peak_memory_mb": memory,
        "final_loss": held_out_loss(trainer.model, model_dir, args),
    }


# -- the comparison -----------------------------------------------------------------------------


def summarise(raw: dict[str, Any], args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    quarter = max(1, len(raw["losses"]) // 4)
    figures = {
        "tokens_per_s": raw["tokens"] / raw["seconds"],
        "peak_memory_mb": raw["peak_memory_mb"],
        "final_loss": raw["final_loss"],
        "last_train_loss": statistics.fmean(raw["losses"][-quarter:]),
        "steps": raw["steps"],
        "tokens": raw["tokens"],
        "seconds": raw["seconds"],
    }
    if args.device == "cuda":
        import torch

        name_of_gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name_of_gpu), None)
        mean_len = raw["tokens"] / (raw["steps"] * args.batch_size)
        achieved = figures["tokens_per_s"] * flops_per_token(
            model_dir, args.strategy, int(mean_len)
        )
        figures["tflops"] = achieved / 1e12
        figures["mfu"] = achieved / peak if peak else None
    return figures


def worker(args: argparse.Namespace) -> None:
    model_dir, data = Path(args.model_dir), Path(args.data)
    run = run_tunesmith if args.worker == "tunesmith" else run_trl
    raw = run(args, model_dir, data)
    print(json.dumps(summarise(raw, args, model_dir) | {"losses": raw["losses"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="bundled", choices=["bundled", "random-1b"])
    parser.add_argument("--strategy", default="lora", choices=["lora", "full"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--warmup-steps", type=int, default=1, help="first steps left out of the timing (both)"
    )
    parser.add_argument("--trl-gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--tokenizer-dir",
        help="random-1b: a folder with the tokenizer (default: the bundled one's)",
    )
    parser.add_argument("--worker", choices=["tunesmith", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    OUT.mkdir(parents=True, exist_ok=True)
    if args.model == "random-1b":
        model_dir = random_1b(Path(args.tokenizer_dir) if args.tokenizer_dir else bundled_model())
    else:
        model_dir = bundled_model()
    data = OUT / f"train-bench-{args.steps * args.batch_size}-{args.seed}.jsonl"
    rows = make_examples(args.steps * args.batch_size, args.seed)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    results: dict[str, dict[str, Any]] = {}
    for side in ("tunesmith", "trl"):
        command = [sys.executable, __file__, *sys.argv[1:], "--worker", side]
        command += ["--model-dir", str(model_dir), "--data", str(data)]
        done = subprocess.run(
            command, capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"}
        )
        if done.returncode:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"the {side} run failed")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[side]
        print(
            f"{side:>10}: {r['tokens_per_s']:8.1f} tokens/s  {r['peak_memory_mb']:8.0f} MB peak  "
            f"final loss {r['final_loss']:.4f}  ({r['steps']} steps, {r['tokens']} tokens, "
            f"{r['seconds']:.1f} s)" + (f"  MFU {r['mfu']:.1%}" if r.get("mfu") else "")
        )
    ours, theirs = results["tunesmith"], results["trl"]
    summary = {
        "benchmark": "train",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("worker", "model_dir", "data")
        },
        "tunesmith": {k: v for k, v in ours.items() if k != "losses"},
        "trl": {k: v for k, v in theirs.items() if k != "losses"},
        "tokens_per_s_ratio": ours["tokens_per_s"] / theirs["tokens_per_s"],
        "peak_memory_ratio": ours["peak_memory_mb"] / theirs["peak_memory_mb"],
        "final_loss_ratio": ours["final_loss"] / theirs["final_loss"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
