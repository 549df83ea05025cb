"""The serving engine on every family it serves: token for token what Hugging Face generates.

For each family of ``catalog.families`` a tiny randomly initialised model is built from its
transformers config class with the features that make the family itself (sliding windows
shorter than the prompts, Gemma's softcaps, Gemma 3's local RoPE base, Phi-3's fused projections
and partial rotary, Phi-3.5's longrope, Llama 3's RoPE scaling, Qwen3's head norms). A LoRA
adapter on the family's suggested targets, with random non-zero ``A`` and ``B``, is written the
way training writes one. The engine's decoder then serves several prompts of different lengths
in one batch — rows at different positions, with and without the adapter, one joining mid-way,
one leaving early — and each row's greedy tokens must equal ``generate(do_sample=False)`` of
transformers on the base, or on the adapter merged into it by PEFT (``merge_and_unload``), an
implementation independent of tunesmith's. The references use transformers' eager attention,
the implementation the windows and softcaps are defined by.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tokenizers
import torch
import transformers
from peft import PeftModel

from tests.conftest import LiveServer
from tests.helpers import wait_registered
from tunesmith.catalog.families import FAMILIES, serving_refusal, suggested_lora_targets
from tunesmith.catalog.models import load_causal_lm
from tunesmith.serving.adapters import Adapter, RowAdapters, load_adapter
from tunesmith.serving.engine import Engine, ModelSource
from tunesmith.serving.forward import Decoder
from tunesmith.serving.sampling import SamplingParams
from tunesmith.training.lora import apply_lora, lora_layers, save_adapter

WINDOW = 8
TINY = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 128,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,  # tied, a random Gemma echoes its input (scaled embeddings)
}
ALTERNATING = ["sliding_attention", "full_attention", "sliding_attention"]

CONFIGS: dict[str, Callable[[], Any]] = {
    "llama": lambda: transformers.LlamaConfig(
        **TINY,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    ),
    "qwen2": lambda: transformers.Qwen2Config(
        **TINY, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1
    ),
    "qwen3": lambda: transformers.Qwen3Config(**TINY),
    "mistral": lambda: transformers.MistralConfig(**TINY, sliding_window=WINDOW),
    "phi3": lambda: transformers.Phi3Config(
        **TINY, partial_rotary_factor=0.5, sliding_window=WINDOW
    ),
    "phi3-longrope": lambda: transformers.Phi3Config(
        **TINY,
        original_max_position_embeddings=16,
        rope_scaling={"type": "longrope", "long_factor": [4.0] * 8, "short_factor": [1.0] * 8},
    ),
    "gemma2": lambda: transformers.Gemma2Config(
        **TINY,
        sliding_window=WINDOW,
        layer_types=ALTERNATING,
        query_pre_attn_scalar=24,
        attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0,
    ),
    "gemma3_text": lambda: transformers.Gemma3TextConfig(
        **TINY,
        sliding_window=WINDOW,
        layer_types=ALTERNATING,
        query_pre_attn_scalar=24,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
            "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    ),
}

PROMPTS = [
    [5 + (7 * i) % 290 for i in range(13)],  # longer than the window
    [11, 42, 7],
    [3 + (11 * i) % 290 for i in range(21)],
]
NEW_TOKENS = 14  # generations cross the window


@dataclass
class Served:
    folder: Path
    adapter_folder: Path
    model_type: str


def build(name: str, root: Path) -> Served:
    """Writes the tiny model of ``name`` and a random adapter on its family's targets."""
    config = CONFIGS[name]()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():  # larger than the default init: varied answers
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    folder = root / name
    model.save_pretrained(folder)
    targets = suggested_lora_targets(config.model_type)
    apply_lora(model, targets, rank=4, alpha=8.0, dropout=0.0)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for part in (layer.lora_A, layer.lora_B):
                part.weight.copy_(torch.randn(part.weight.shape, generator=generator) * 0.3)
    adapter_folder = root / f"{name}-adapter"
    adapter_folder.mkdir()
    save_adapter(
        model,
        adapter_folder,
        base_model=str(folder),
        rank=4,
        alpha=8.0,
        dropout=0.0,
        target_modules=targets,
    )
    return Served(folder, adapter_folder, config.model_type)


@pytest.fixture(scope="module", params=list(CONFIGS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Served:
    return build(str(request.param), tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="module")
def references(served: Served) -> tuple[Any, Any]:
    """transformers' base model, and the base with the adapter merged by PEFT."""
    return reference(served, adapter=False), reference(served, adapter=True)


def reference(served: Served, *, adapter: bool) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(served.folder), attn_implementation="eager"
    )
    if adapter:
        model = PeftModel.from_pretrained(model, str(served.adapter_folder)).merge_and_unload()
    return model.eval()


def hf_greedy(model: Any, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return [int(t) for t in out[0, len(prompt) :]]


@dataclass
class Request:
    prompt: list[int]
    adapter: Adapter | None
    joins_at: int
    """The decode step before which it is prefilled."""
    tokens: int
    out: list[int]


def serve(decoder: Decoder, requests: list[Request]) -> None:
    """Runs the requests through ``decoder`` as the engine batches them: a request is prefilled
    into the next free row when its step comes, every active row decodes together, and a finished
    row's place is taken by the last row."""
    active: list[Request] = []
    rows = RowAdapters(decoder.rows)
    step = 0
    while active or any(not r.out for r in requests):
        for request in requests:
            if request.joins_at == step and not request.out:
                logits = decoder.prefill(
                    len(active), request.prompt, RowAdapters.of([request.adapter])
                )
                request.out.append(int(logits.argmax()))
                active.append(request)
                rows.append(request.adapter)
        for row in reversed(range(len(active))):
            if len(active[row].out) == active[row].tokens:
                last = len(active) - 1
                if row != last:
                    decoder.move(last, row)
                    rows.move(last, row)
                    active[row] = active[last]
                active.pop()
                rows.pop()
        if active:
            logits = decoder.decode([r.out[-1] for r in active], rows)
            for request, row_logits in zip(active, logits, strict=True):
                request.out.append(int(row_logits.argmax()))
        step += 1


def test_batched_rows_equal_hugging_face_greedy_with_and_without_the_adapter(
    served: Served, references: tuple[Any, Any]
) -> None:
    model = load_causal_lm(served.folder, attention="eager")
    decoder = Decoder(model, rows=4)
    adapter = load_adapter("a", served.adapter_folder, dtype=torch.float32, device="cpu")
    decoder.check_adapter(adapter)
    requests = [
        Request(PROMPTS[0], adapter, joins_at=0, tokens=NEW_TOKENS, out=[]),
        Request(PROMPTS[1], None, joins_at=0, tokens=6, out=[]),  # leaves early
        Request(PROMPTS[2], adapter, joins_at=3, tokens=NEW_TOKENS, out=[]),  # joins mid-way
        Request(PROMPTS[0], None, joins_at=5, tokens=NEW_TOKENS, out=[]),
    ]
    serve(decoder, requests)
    base, merged = references
    for request in requests:
        expected = hf_greedy(merged if request.adapter else base, request.prompt, request.tokens)
        assert request.out == expected, (served.model_type, request.prompt[:3], request.adapter)
    # the adapter changes the answer, so it was applied rather than ignored
    assert requests[0].out != requests[3].out


def test_the_logits_are_the_models_own(served: Served, references: tuple[Any, Any]) -> None:
    """The prefill's next-token logits, and a decode step's, equal transformers' forward pass —
    final logit softcapping included, which greedy decoding alone cannot see."""
    model = load_causal_lm(served.folder, attention="eager")
    decoder = Decoder(model, rows=1)
    base = references[0]
    prompt = PROMPTS[2]
    with torch.no_grad():
        expected = base(torch.tensor([[*prompt, 17]])).logits[0].float()
    assert torch.allclose(
        decoder.prefill(0, prompt, RowAdapters.of([None])), expected[-2], atol=1e-4
    )
    assert torch.allclose(decoder.decode([17], RowAdapters.of([None]))[0], expected[-1], atol=1e-4)


def test_the_engine_serves_the_family_with_its_adapter(
    served: Served, references: tuple[Any, Any]
) -> None:
    """The engine itself (loading the model and the adapter as serving does) answers as
    transformers does."""
    engine = Engine(max_batch=4, max_adapters=2)
    engine.start()
    try:
        out = _engine_tokens(engine, ModelSource(served.folder, served.adapter_folder))
    finally:
        engine.stop()
    assert out == hf_greedy(references[1], PROMPTS[0], 8)


def test_every_family_is_covered() -> None:
    assert {CONFIGS[name]().model_type for name in CONFIGS} == set(FAMILIES)


class _Collect:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reason: str | None = None
        self.done = threading.Event()

    def token(self, text: str) -> None:
        self.parts.append(text)

    def finish(self, reason: str, completion_tokens: int) -> None:
        self.reason = reason
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.reason = f"failed: {error}"
        self.done.set()


def _word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A real tokenizer over the tiny vocabulary: token ``i`` is the word ``t<i>``."""
    vocab = {f"t{i}": i for i in range(TINY["vocab_size"])}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t0"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def _engine_tokens(engine: Engine, source: ModelSource) -> list[int]:
    sink = _Collect()
    params = SamplingParams(max_tokens=8, temperature=0.0)
    engine.submit(
        source, PROMPTS[0], [(params, sink)], tokenizer=_word_tokenizer(), stop_ids=frozenset()
    )
    assert sink.done.wait(30) and sink.reason == "length", sink.reason
    return [int(word[1:]) for word in "".join(sink.parts).split()]


# -- what cannot be served ---------------------------------------------------------------------


def gpt2_folder(toy_model_dir: Path, folder: Path) -> Path:
    """A tiny GPT-2 (a family the engine does not run) with the toy's tokenizer and template,
    so registration accepts it."""
    shutil.copytree(
        toy_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "config.json")
    )
    vocab = transformers.AutoTokenizer.from_pretrained(str(toy_model_dir)).vocab_size
    config = transformers.GPT2Config(vocab_size=vocab + 8, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_a_model_of_another_family_is_refused_at_deployment_creation_with_the_reason(
    jobs_api: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    folder = gpt2_folder(toy_model_dir, tmp_path / "gpt2")
    with jobs_api.http() as http:
        registered = http.post(
            "/v1/base_models",
            json={
                "id": "tiny-gpt2",
                "source": str(folder),
                "lora_target_modules": ["c_attn"],
                "context_length": 128,
            },
        )
        assert registered.status_code == 200, registered.text
        entry = wait_registered(http, "tiny-gpt2")
    # trainable, so in the catalog; the entry already says it cannot be served, and why
    assert (entry["status"], entry["family"], entry["servable"]) == ("ready", "gpt2", False)
    assert "'gpt2'" in entry["serving_refusal"]
    http = jobs_api.http()
    response = http.post("/v1/deployments", json={"name": "g", "model": "tiny-gpt2"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "model_not_servable")
    assert "'gpt2'" in error["message"] and "Gemma 2" in error["message"]
    assert http.get("/v1/deployments/g").status_code == 404  # nothing was created
    # the engine refuses it too, with the same reason
    model = load_causal_lm(folder, attention="eager")
    with pytest.raises(ValueError, match="does not run 'gpt2' models"):
        Decoder(model, rows=1)


def test_the_engine_refuses_what_serving_refusal_refuses() -> None:
    """One rule: an unknown RoPE scaling is refused at load, naming it (transformers would run
    it, the engine's attention would not know what it does)."""
    config = CONFIGS["llama"]()
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.config.rope_parameters = {"rope_type": "mystery", "rope_theta": 10000.0}
    with pytest.raises(ValueError, match="RoPE scaling 'mystery'"):
        Decoder(model, rows=1)


def test_an_adapter_for_another_family_is_refused_by_name(tmp_path: Path) -> None:
    """A Llama adapter (``q_proj``, ``gate_proj``…) on Phi-3 (``qkv_proj``, ``gate_up_proj``)
    would otherwise adapt almost nothing."""
    llama, phi3 = build("llama", tmp_path), build("phi3", tmp_path)
    decoder = Decoder(load_causal_lm(phi3.folder, attention="eager"), rows=1)
    adapter = load_adapter("llama", llama.adapter_folder, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="is not a projection of this phi3 model") as refused:
        decoder.check_adapter(adapter)
    assert "(it has down_proj, gate_up_proj, o_proj, qkv_proj in 3 layers)" in str(refused.value)


@pytest.mark.parametrize(
    ("config", "refused"),
    [
        # config.json as the Hub ships them: RoPE under ``rope_scaling``, ``type`` or ``rope_type``
        ({"model_type": "phi3", "rope_scaling": {"type": "longrope"}}, None),
        ({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 32.0}}, None),
        ({"model_type": "qwen2", "rope_scaling": None, "use_sliding_window": True}, None),
        ({"model_type": "llama", "rope_scaling": {"type": "mystery"}}, "RoPE scaling 'mystery'"),
        # transformers 5's ``rope_parameters``, per layer type for Gemma 3
        (
            {
                "model_type": "gemma3_text",
                "rope_parameters": {
                    "sliding_attention": {"rope_type": "default"},
                    "full_attention": {"rope_type": "mystery"},
                },
            },
            "RoPE scaling 'mystery'",
        ),
        (
            {"model_type": "gemma3_text", "use_bidirectional_attention": True},
            "attends bidirectionally",
        ),
        ({"model_type": "gemma3"}, "vision tower"),
        ({"model_type": "gpt2"}, "does not run 'gpt2' models"),
    ],
)
def test_serving_refusal_reads_config_files_in_their_several_forms(
    config: dict[str, Any], refused: str | None
) -> None:
    reason = serving_refusal(config)
    assert reason is None if refused is None else refused in (reason or "")
