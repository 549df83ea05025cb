"""The real bundled SmolLM2-135M-Instruct, converted once per session from its GGUF into a plain
Hugging Face folder (the ``bundled_model_dir`` fixture): a dense LlamaForCausalLM with tied
embeddings, the same logits as transformers' own GGUF loading, cached after the first call."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from tunesmith.catalog import models
from tunesmith.catalog.bundled import bundled_gguf, ensure_bundled_tokenizer
from tunesmith.catalog.models import BUNDLED, load_causal_lm, materialize
from tunesmith.data.chat_format import ChatFormat

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def safetensors_names(folder: Path) -> set[str]:
    names: set[str] = set()
    for file in folder.glob("*.safetensors"):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            names |= set(json.loads(handle.read(length))) - {"__metadata__"}
    return names


def test_the_folder_is_a_plain_hugging_face_model(bundled_model_dir: Path) -> None:
    assert bundled_model_dir.name == "SmolLM2-135M-Instruct"
    files = {p.name for p in bundled_model_dir.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "model.safetensors",
        "tunesmith-complete",
    } <= files
    config = json.loads((bundled_model_dir / "config.json").read_text())
    assert not [key for key in config if "quant" in key or "gguf" in key or "name_or_path" in key]
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True
    # Tied: the output layer is stored once, as the input embedding.
    names = safetensors_names(bundled_model_dir)
    assert "model.embed_tokens.weight" in names
    assert not any(name.startswith("lm_head") for name in names)

    model = load_causal_lm(bundled_model_dir)
    assert type(model) is LlamaForCausalLM
    assert getattr(model, "hf_quantizer", None) is None
    assert not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert model.config._attn_implementation == "sdpa"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_the_chat_format_ends_turns_with_im_end(bundled_model_dir: Path) -> None:
    chat = ChatFormat.from_dir(bundled_model_dir)
    assert chat.context_length == 8192 == BUNDLED.context_length
    assert chat.end_of_turn == "<|im_end|>"
    tokenizer = chat.tokenizer
    assert tokenizer.model_max_length == 8192
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    generation = json.loads((bundled_model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == end_id == tokenizer.eos_token_id
    assert tokenizer("Hello world").input_ids == [19556, 905]  # no BOS added, as on the Hub


def test_logits_equal_transformers_direct_gguf_loading(bundled_model_dir: Path) -> None:
    converted = load_causal_lm(bundled_model_dir).eval()
    gguf = bundled_gguf()
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    tokenizer = ChatFormat.from_dir(bundled_model_dir).tokenizer
    ids = tokenizer.apply_chat_template(MESSAGES, tokenize=True, return_dict=True)["input_ids"]
    batch = torch.tensor([ids])
    with torch.inference_mode():
        expected = direct(batch).logits
        actual = converted(batch).logits
    assert actual.shape == (1, len(ids), 49152)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    # And the converted model still knows things: greedy decoding answers the question.
    prompt = tokenizer.apply_chat_template(
        MESSAGES[:1], tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    with torch.inference_mode():
        answer = converted.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, len(prompt) :])


def test_a_second_call_reads_the_cache(
    bundled_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in bundled_model_dir.iterdir()}

    def no_conversion(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(models, "convert_gguf", no_conversion)
    assert materialize(BUNDLED, bundled_model_dir.parent) == bundled_model_dir
    assert {p.name: p.stat().st_mtime_ns for p in bundled_model_dir.iterdir()} == before
    assert [p.name for p in bundled_model_dir.parent.iterdir()] == [bundled_model_dir.name]


def test_validation_reuses_the_whole_model_folder(bundled_model_dir: Path) -> None:
    assert ensure_bundled_tokenizer(bundled_model_dir.parent) == bundled_model_dir
    assert [p.name for p in bundled_model_dir.parent.iterdir()] == [bundled_model_dir.name]
