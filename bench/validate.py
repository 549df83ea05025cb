"""Benchmark: tunesmith's whole-file validation against the raw tokenizer, side by side.

Generates a realistic chat fine-tuning JSONL file (100 MB by default, ``--large`` for 512 MB) and
measures, each in its own fresh subprocess so that peak memory is not shared:

* **tunesmith**: ``validate_file(path, chat_format)``, timed from the file on disk to the finished
  report: read, JSON parse, every validation rule, duplicate detection, chat-template rendering,
  tokenisation, loss-mask token counts and the token statistics.
* **baseline**: the raw ``tokenizers.Tokenizer`` (``chat_format.tokenizer.backend_tokenizer``)
  calling ``encode_batch(texts, add_special_tokens=False)`` on the very texts tunesmith tokenises
  (``ChatFormat.render`` of every conversation), in batches of 1,024. The texts are read, parsed
  and rendered with the clock stopped, 16 batches at a time (about 50 MB of text, so that memory
  stays bounded): only the encoding is timed.

Both sides use the real bundled SmolLM2-135M-Instruct tokenizer. Each side reports its wall time
and its own peak RSS (``ru_maxrss``); the script prints a readable table and then, on its last
line, one JSON object with every figure and ``throughput_ratio`` (tunesmith / baseline).

    .venv/bin/python bench/validate.py               # 100 MB
    .venv/bin/python bench/validate.py --large       # 512 MB (same as --size-mb 512)
    .venv/bin/python bench/validate.py --repeat 5 --compare-whole

``--repeat`` alternates the sides and keeps each one's fastest run (the machine may be shared);
``--compare-whole`` adds tunesmith with piece-wise encoding off (every rendered text encoded
whole), to measure what that optimisation gives; ``--unique-system`` gives every example its own
system prompt, so that no text repeats.

The generated file is kept under ``bench/out/`` (gitignored) and reused by later runs with the same
size and seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without an installed package too

MB = 1 << 20
GENERATOR_VERSION = 1  # part of the file name: bump when the generated data changes
THROUGHPUT_TARGET = 0.9
MEMORY_TARGET_MB = 1024
BASELINE_CHUNK = 16  # batches of texts the baseline renders, then encodes under the clock

# -- data generation -------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


SYSTEM_PROMPT = (
    "You are Aria, the customer-support assistant of Northwind Outfitters, an online shop for "
    "outdoor and camping gear. Answer politely, accurately and concisely. If a question is about "
    "an order, ask for the order number before giving details, and never reveal another "
    "customer's data. When you are unsure, say so and offer to connect the customer with a human "
    "agent. Use metric units, format prices in euros, and keep answers under 300 words unless the "
    "customer asks for more detail. Do not give medical, legal or financial advice."
)

FUNCTION_WORDS = _words(
    """the of and to a in is it you that he was for on are with as I his they be at one
have this from or had by not word but what some we can out other were all there when up use your
how said an each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could go come did number sound no most people my
over know water than call first who may down side been now find any new work part take get place
made live where after back little only round man year came show every good me give our under name
very through just form sentence great think say help low line differ turn cause much mean before
move right boy old too same tell does set three want air well also play small end put home read
hand port large spell add even land here must big high such follow act why ask men change went
light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard start might
story saw far sea draw left late run don't while press close night real life few north"""
)

CONTENT_WORDS = _words(
    """order tent stove sleeping bag backpack boots jacket rain waterproof shipping
delivery refund return exchange size color weight warranty price discount coupon account password
email address invoice payment card transfer tracking parcel courier warehouse stock available
camping hiking trail mountain lake river forest weather temperature summer winter season battery
lamp headlamp filter bottle knife compass map route altitude night morning evening weekend product
quality material nylon polyester cotton wool zipper seam pole stake groundsheet footprint vestibule
customer support agent ticket question problem issue solution feature model version update store
online website checkout basket cart email phone message reply request status confirm cancel
schedule"""
)

_PREFIXES = _words(
    "un re pre dis over under inter trans sub super anti co de en mis non out post semi"
)
_ROOTS = _words(
    """form struct port duct graph scrib spect tract mit fer ject press vert mot pend sist cept
cred dict fac fin flect flu gen grad gress jud junct lat loc log man mand mar med min mod mon mort
nat nom nov pac pass path ped pel pon pop pos quer rupt sci sect sens sent sequ serv sol son spir
tact temp ten term terr test tort vac val ven ver vid vis voc vol"""
)
_SUFFIXES = _words("ation ing ed ly ness ment able ive ous al ity er ism ist ize ure ance ful less")

UNICODE_WORDS = _words(
    """café naïve résumé façade jalapeño señor Zürich Köln São_Paulo Ångström crème
brûlée piñata über Straße Gdańsk Łódź Dvořák Māori Ærø smörgåsbord déjà_vu coöperate fiancée
Москва спасибо привет пожалуйста Ελλάδα ευχαριστώ καλημέρα 東京 日本語 ありがとう こんにちは 北京
你好 谢谢 서울 감사합니다 안녕하세요 שלום مرحبا شكرا नमस्ते धन्यवाद ✓ → ≥ ≤ ± °C € £ ¥ ™ ½ ¾
😀 🙂 👍 🎉 🏕️ ⛺ 🌲 🔥 ❄️ 🚚 📦 ✅"""
)
UNICODE_WORDS = [w.replace("_", " ") for w in UNICODE_WORDS]

CODE_SNIPPETS = [
    "`order_id`",
    "`tracking_number`",
    "`GET /v1/orders/{id}`",
    "`pip install northwind`",
    "`size=XL`",
    "`status: shipped`",
]


class Vocabulary:
    """A Zipf-distributed word list: real English at the top, derived pseudo-words in the tail."""

    def __init__(self) -> None:
        rng = np.random.default_rng(20240611)  # fixed: the vocabulary does not depend on --seed
        derived = sorted({p + r + s for p in ["", *_PREFIXES] for r in _ROOTS for s in _SUFFIXES})
        derived_arr = np.array(derived, dtype=object)
        rng.shuffle(derived_arr)
        words = list(dict.fromkeys([*FUNCTION_WORDS, *CONTENT_WORDS, *derived_arr.tolist()]))
        self.words = np.array(words, dtype=object)
        ranks = np.arange(1, len(words) + 1, dtype=np.float64)
        weights = 1.0 / (ranks + 2.7)  # Zipf-Mandelbrot, as word frequencies in real text
        self.cdf = np.cumsum(weights / weights.sum())
        self.cdf[-1] = 1.0

    def draw(self, rng: np.random.Generator, n: int) -> list[str]:
        picked: list[str] = self.words[np.searchsorted(self.cdf, rng.random(n))].tolist()
        return picked


def _prose(rng: np.random.Generator, vocab: Vocabulary, n_words: int, *, answer: bool) -> str:
    """Sentences of varied length, with paragraphs, lists, numbers and code in answers."""
    words = vocab.draw(rng, n_words)
    unicode_share = 0.08 if rng.random() < 0.12 else 0.0  # some examples carry unicode
    extras = rng.random(n_words)
    for i in np.flatnonzero(extras < unicode_share):
        words[i] = UNICODE_WORDS[rng.integers(len(UNICODE_WORDS))]
    for i in np.flatnonzero(extras > 0.985):
        kind = rng.integers(4)
        if kind == 0:
            words[i] = str(rng.integers(1, 10_000))
        elif kind == 1:
            words[i] = f"{rng.integers(1, 500)}.{rng.integers(0, 100):02d}"
        elif kind == 2:
            words[i] = f"#{rng.integers(100_000, 999_999)}"
        else:
            words[i] = CODE_SNIPPETS[rng.integers(len(CODE_SNIPPETS))]
    paragraphs: list[str] = []
    sentences: list[str] = []
    at = 0
    while at < n_words:
        length = int(rng.integers(4, 22))
        chunk = words[at : at + length]
        at += length
        if len(chunk) > 6 and rng.random() < 0.3:
            chunk[int(rng.integers(2, len(chunk) - 2))] += ","
        end = "?" if not answer and rng.random() < 0.4 else ("!" if rng.random() < 0.05 else ".")
        sentence = " ".join(chunk)
        sentences.append(sentence[:1].upper() + sentence[1:] + end)
        if answer and (len(sentences) >= 4 or at >= n_words) and rng.random() < 0.35:
            if rng.random() < 0.3:
                paragraphs.append("\n".join(f"{j + 1}. {s}" for j, s in enumerate(sentences)))
            else:
                paragraphs.append(" ".join(sentences))
            sentences = []
    if sentences:
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def _length(rng: np.random.Generator, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(median * math.exp(sigma * rng.standard_normal())))))


def generate(path: Path, size_bytes: int, seed: int, unique_system: bool) -> tuple[int, float]:
    """Writes chat examples until the file reaches ``size_bytes``; returns (examples, seconds).

    ``unique_system``: every example gets its own system prompt (a control: no text repeats).
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    vocab = Vocabulary()
    system = {"role": "system", "content": SYSTEM_PROMPT}
    tmp = path.with_suffix(".partial")
    written = n = 0
    with tmp.open("wb", buffering=4 * MB) as out:
        while written < size_bytes:
            if unique_system:
                prompt = _prose(rng, vocab, _length(rng, 85, 0.2, 50, 150), answer=True)
                system = {"role": "system", "content": prompt}
            messages: list[dict[str, str]] = [system]
            for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))):
                user = _prose(rng, vocab, _length(rng, 28, 0.8, 3, 400), answer=False)
                answer = _prose(rng, vocab, _length(rng, 120, 0.75, 5, 1200), answer=True)
                messages += [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": answer},
                ]
            line = orjson.dumps({"messages": messages}) + b"\n"
            out.write(line)
            written += len(line)
            n += 1
    tmp.replace(path)
    return n, time.perf_counter() - start


def dataset(out_dir: Path, size_mb: int, seed: int, unique_system: bool, regenerate: bool) -> Path:
    variant = "-unique-system" if unique_system else ""
    path = out_dir / f"chat-{size_mb}mb-seed{seed}{variant}-v{GENERATOR_VERSION}.jsonl"
    if path.exists() and not regenerate:
        print(f"reusing {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"generating {size_mb} MB of chat examples into {path} ...", flush=True)
    n, seconds = generate(path, size_mb * MB, seed, unique_system)
    print(f"  {n:,} examples in {seconds:.1f} s ({size_mb / seconds:.1f} MB/s)")
    return path


# -- the two sides, each run in a child process ----------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    """User plus system time of this process, all its threads (the tokenizer's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_chat_format(tokenizer_dir: Path) -> Any:
    from tunesmith.data.chat_format import ChatFormat

    return ChatFormat.from_dir(tokenizer_dir, name="SmolLM2-135M-Instruct")


def child_tunesmith(path: Path, tokenizer_dir: Path, whole_texts: bool = False) -> dict[str, Any]:
    from tunesmith.data.validate import validate_file

    chat_format = _load_chat_format(tokenizer_dir)
    if whole_texts:  # piece-wise encoding off: every text encoded whole, as before it existed
        chat_format._pieces = None
    rss_loaded = _peak_rss_mb()
    cpu, start = _cpu_seconds(), time.perf_counter()
    report = validate_file(path, chat_format)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    stats = report.statistics or {}
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "examples": report.n_examples,
        "valid": report.valid,
        "errors": report.errors.total,
        "warnings": report.warnings.total,
        # every example fits the context (checked below), so billable tokens are all tokens
        "tokens": stats.get("billable_tokens"),
        "over_context": stats.get("examples_over_context_length"),
        "assistant_tokens_mean": (stats.get("assistant_tokens_per_example") or {}).get("mean"),
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_baseline(path: Path, tokenizer_dir: Path, batch: int) -> dict[str, Any]:
    """Times ``encode_batch`` alone: texts are rendered before the clock runs, a chunk at a time.

    Chunks keep the texts in memory bounded: holding all of a 512 MB file's rendered texts
    (1.3 GB of strings) slows the tokenizer by a fifth, which would flatter tunesmith.
    """
    from tunesmith.data.jsonl import iter_lines

    chat_format = _load_chat_format(tokenizer_dir)
    tokenizer = chat_format.tokenizer.backend_tokenizer
    rss_loaded = _peak_rss_mb()
    lines = iter_lines(path)
    examples = tokens = chars = 0
    seconds = cpu = 0.0
    while True:
        texts: list[str] = []  # one chunk, rendered untimed
        for _, raw in itertools.islice(lines, BASELINE_CHUNK * batch):
            messages = orjson.loads(raw)["messages"]
            trainable = [m["role"] == "assistant" for m in messages]
            texts.append(chat_format.render(messages, trainable).text)
        if not texts:
            break
        cpu_start, start = _cpu_seconds(), time.perf_counter()
        for i in range(0, len(texts), batch):
            # counted and dropped at once: a batch's encodings still alive while the next is
            # encoded slow the tokenizer by about a tenth
            encodings = tokenizer.encode_batch(texts[i : i + batch], add_special_tokens=False)
            tokens += sum(len(e) for e in encodings)
            del encodings
        seconds += time.perf_counter() - start
        cpu += _cpu_seconds() - cpu_start
        examples += len(texts)
        chars += sum(len(t) for t in texts)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "examples": examples,
        "tokens": tokens,
        "text_chars": chars,
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_child(side: str, path: Path, tokenizer_dir: Path, batch: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--file",
        str(path),
        "--tokenizer-dir",
        str(tokenizer_dir),
        "--batch",
        str(batch),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"the {side} child failed with exit status {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the parent ------------------------------------------------------------------------------------


def _rates(result: dict[str, Any], size_bytes: int) -> dict[str, float]:
    seconds = result["seconds"]
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(result["cpu_seconds"], 2),
        "mb_per_s": round(size_bytes / MB / seconds, 2),
        "examples_per_s": round(result["examples"] / seconds, 1),
        "tokens_per_s": round(result["tokens"] / seconds),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
    }


def _median_ratio(runs: dict[str, list[dict[str, Any]]], slow: str, fast: str) -> float:
    """Median seconds of ``slow`` over median seconds of ``fast``: a throughput ratio."""
    return statistics.median(r["seconds"] for r in runs[slow]) / statistics.median(
        r["seconds"] for r in runs[fast]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100, help="size of the generated file")
    parser.add_argument("--large", action="store_true", help="the 512 MB file (--size-mb 512)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each side, alternating; the fastest of each is reported",
    )
    parser.add_argument("--batch", type=int, default=1024, help="baseline encode_batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tunesmith-bench")
    parser.add_argument("--regenerate", action="store_true", help="rewrite the data file")
    parser.add_argument(
        "--unique-system",
        action="store_true",
        help="a control: every example gets its own system prompt, so no text repeats",
    )
    parser.add_argument(
        "--compare-whole",
        action="store_true",
        help="also run tunesmith encoding whole texts (piece-wise encoding off)",
    )
    sides = ["tunesmith", "baseline", "whole_texts"]
    parser.add_argument("--child", choices=sides, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child != "baseline":
            result = child_tunesmith(args.file, args.tokenizer_dir, args.child == "whole_texts")
        else:
            result = child_baseline(args.file, args.tokenizer_dir, args.batch)
        print(json.dumps(result))
        return

    import tokenizers
    import transformers

    from tunesmith.catalog.bundled import ensure_bundled_tokenizer

    size_mb = 512 if args.large else args.size_mb
    tokenizer_dir = ensure_bundled_tokenizer(args.cache)
    path = dataset(args.out, size_mb, args.seed, args.unique_system, args.regenerate)
    size_bytes = path.stat().st_size

    runs: dict[str, list[dict[str, Any]]] = {"tunesmith": [], "baseline": []}
    if args.compare_whole:
        runs["whole_texts"] = []
    for attempt in range(args.repeat):
        for side in runs:
            print(f"run {attempt + 1}/{args.repeat}: {side} ...", end=" ", flush=True)
            result = run_child(side, path, tokenizer_dir, args.batch)
            runs[side].append(result)
            print(
                f"{result['seconds']:.1f} s ({result['cpu_seconds']:.1f} s of CPU), "
                f"peak RSS {result['peak_rss_mb']:.0f} MB",
                flush=True,
            )

    ours = min(runs["tunesmith"], key=lambda r: r["seconds"])
    base = min(runs["baseline"], key=lambda r: r["seconds"])
    ours["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs["tunesmith"])
    base["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs["baseline"])
    problems = []
    if not ours["valid"] or ours["warnings"]:
        problems.append(f"the report is not clean: {ours['errors']} errors, {ours['warnings']} w.")
    if ours["over_context"]:
        problems.append(f"{ours['over_context']} examples exceed the context length")
    if ours["examples"] != base["examples"] or ours["tokens"] != base["tokens"]:
        problems.append(
            f"the sides disagree: tunesmith {ours['examples']} examples / {ours['tokens']} tokens,"
            f" baseline {base['examples']} / {base['tokens']}"
        )
    whole = min(runs.get("whole_texts") or [{}], key=lambda r: r.get("seconds", 0))
    if whole and (whole["examples"], whole["tokens"]) != (ours["examples"], ours["tokens"]):
        problems.append("tunesmith with whole texts counted differently")
    t, b = _rates(ours, size_bytes), _rates(base, size_bytes)
    ratio = b["seconds"] / t["seconds"]
    median_ratio = _median_ratio(runs, "baseline", "tunesmith")
    cpu_ratio = base["cpu_seconds"] / ours["cpu_seconds"]

    print()
    print(f"file: {path.name}: {size_bytes / MB:.1f} MB, {base['examples']:,} examples, ")
    print(
        f"      {base['tokens']:,} tokens ({base['text_chars'] / base['tokens']:.2f} rendered "
        "characters a token), "
        + ("a system prompt of its own" if args.unique_system else "a shared system prompt")
        + " in each example"
    )
    print(f"{'':12}{'seconds':>10}{'MB/s':>10}{'examples/s':>13}{'tokens/s':>12}{'peak RSS':>11}")
    rows = [("tunesmith", t), ("baseline", b)]
    if whole:
        whole["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs["whole_texts"])
        rows.append(("whole texts", _rates(whole, size_bytes)))
    for name, r in rows:
        print(
            f"{name:12}{r['seconds']:>10.2f}{r['mb_per_s']:>10.2f}{r['examples_per_s']:>13,.0f}"
            f"{r['tokens_per_s']:>12,}{r['peak_rss_mb']:>8,.0f} MB"
        )
    print(f"throughput ratio (tunesmith / baseline): {ratio:.3f}  (target >= {THROUGHPUT_TARGET})")
    if args.repeat > 1:
        print(f"  the same of the median runs: {median_ratio:.3f}")
    print(f"CPU time ratio (baseline CPU s / tunesmith CPU s): {cpu_ratio:.3f}")
    if whole:
        print(
            f"piece-wise encoding speed-up (whole texts s / tunesmith s): "
            f"{whole['seconds'] / ours['seconds']:.3f}, of the median runs "
            f"{_median_ratio(runs, 'whole_texts', 'tunesmith'):.3f}"
        )
    print(f"tunesmith peak RSS: {t['peak_rss_mb']:.0f} MB  (target < {MEMORY_TARGET_MB} MB)")
    for problem in problems:
        print(f"PROBLEM: {problem}")

    figures = {
        "size_mb": round(size_bytes / MB, 1),
        "examples": base["examples"],
        "tokens": base["tokens"],
        "unique_system": args.unique_system,
        "repeat": args.repeat,
        "baseline_batch": args.batch,
        "tunesmith": t | {"rss_after_load_mb": round(ours["rss_after_load_mb"], 1)},
        "baseline": b | {"rss_after_load_mb": round(base["rss_after_load_mb"], 1)},
        "tunesmith_peak_rss_mb": t["peak_rss_mb"],
        "baseline_peak_rss_mb": b["peak_rss_mb"],
        "throughput_ratio": round(ratio, 4),
        "cpu_ratio": round(cpu_ratio, 4),
        "median_throughput_ratio": round(median_ratio, 4),
        "all_seconds": {side: [round(r["seconds"], 2) for r in rs] for side, rs in runs.items()},
        "peak_rss_ratio": round(t["peak_rss_mb"] / b["peak_rss_mb"], 4),
        **(
            {
                "whole_texts": _rates(whole, size_bytes),
                "whole_texts_throughput_ratio": round(b["seconds"] / whole["seconds"], 4),
                "piecewise_speedup_ratio": round(whole["seconds"] / ours["seconds"], 4),
                "median_piecewise_speedup_ratio": round(
                    _median_ratio(runs, "whole_texts", "tunesmith"), 4
                ),
            }
            if whole
            else {}
        ),
        "meets_throughput_target": ratio >= THROUGHPUT_TARGET,
        "meets_memory_target": t["peak_rss_mb"] < MEMORY_TARGET_MB,
        "consistent": not problems,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
        },
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
