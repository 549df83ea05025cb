"""A toy tokenizer and model config, built in seconds, for tests that must not touch SmolLM2.

The tokenizer is a byte-level BPE with ChatML special tokens and SmolLM2's chat template, so
rendering and masking behave like the real model's; the config describes a tiny Llama, saved with
randomly initialised weights (seed 0)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CONTEXT_LENGTH = 256

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Answer briefly and politely.",
    "What is the capital of France? Paris is the capital of France.",
    "Fine-tuning teaches a model the style of its examples.",
    "user assistant system tool function weight content role messages",
    "0123456789 !?.,;:'\"()[]{}<>/\\|-_=+*&^%$#@~` \n\t",
]


def build_toy_model_dir(
    path: Path,
    *,
    chat_template: str = CHATML_TEMPLATE,
    with_weights: bool = True,
    special: tuple[str, ...] = tuple(SPECIAL),
    bos: str = "<|im_start|>",
    eos: str = "<|im_end|>",
    context_length: int = CONTEXT_LENGTH,
    pad_token: str | None = None,
) -> Path:
    """The toy model in ``path``; ``special`` (the first is the unknown token), ``bos`` and
    ``eos`` stand in for another model's special tokens. Its pad token (default: ``eos``) has an
    embedding that starts at zero (``padding_idx``), so with the end-of-turn token as pad LoRA,
    which leaves embeddings frozen, can hardly teach it to stop; ``pad_token="<|endoftext|>"``
    gives one that can learn to."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad_token or eos,
        unk_token=special[0],
        additional_special_tokens=list(special),
    )
    fast.chat_template = chat_template
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(fast),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": context_length,
        "bos_token_id": fast.bos_token_id,
        "eos_token_id": fast.eos_token_id,
        "pad_token_id": fast.pad_token_id,
        "tie_word_embeddings": True,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    if with_weights:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**config))
        model.save_pretrained(str(path))  # rewrites config.json with the same fields
    return path
