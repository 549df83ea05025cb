"""Tiny stand-ins for a model of each family tunesmith knows (``catalog/families.py``), built in
seconds, so every family goes through registration, validation, training and serving in tests.

:func:`build_family_model_dir` writes a Hugging Face folder for one ``model_type``: the family's
own transformers config class (2 layers, hidden size 64, 4 query and 2 key/value heads, head size
16) with randomly initialised weights (seed 0), saved with ``save_pretrained`` (safetensors); a
byte-level BPE tokenizer trained as :mod:`tests.toy_model`'s but holding the family's special
tokens, with bos, eos and pad set as the real model's ``tokenizer_config.json`` has them; a chat
template written here (not copied) that produces the real model's format; and a
``generation_config.json`` whose ``eos_token_id`` lists the same tokens as the real model's.
Token ids differ from the real vocabularies; the tokens are the same.

What each reproduces:

- ``llama``: Meta-Llama-3-8B-Instruct as first published: ``<|begin_of_text|>`` then, per
  message, ``<|start_header_id|>role<|end_header_id|>\\n\\n`` + the text, trimmed, +
  ``<|eot_id|>``; every role accepted. Its tokenizer's eos is ``<|end_of_text|>``, which the
  template never writes; the generation config lists ``<|end_of_text|>`` and ``<|eot_id|>``. No
  pad token.
- ``qwen2``: Qwen2.5-Instruct: ChatML (``<|im_start|>role\\n…<|im_end|>\\n``), with Qwen's
  default system prompt when the conversation has none. eos ``<|im_end|>``, pad
  ``<|endoftext|>``, no bos; the generation config lists ``<|im_end|>`` and ``<|endoftext|>``.
- ``qwen3``: Qwen3: ChatML without a default system prompt; an assistant answer after the last
  user message is written with a ``<think>…</think>`` block (empty when the answer has none; an
  answer holding ``…</think>`` has its reasoning moved into it), earlier answers without;
  ``enable_thinking=False`` puts an empty think block in the generation prompt. ``<think>`` and
  ``</think>`` are added, non-special tokens. Tokens as Qwen2.5's.
- ``mistral``: Mistral-7B-Instruct-v0.2: ``<s>[INST] user [/INST]answer</s>``; only user and
  assistant roles, strictly alternating from a user message, otherwise the template raises.
  ``[INST]``/``[/INST]`` are special tokens (as v0.3 has them). bos ``<s>``, eos ``</s>``; the
  config has a small ``sliding_window``.
- ``phi3``: Phi-3-mini-4k / Phi-3.5-mini-instruct: ``<|user|>\\n…<|end|>\\n<|assistant|>\\n…
  <|end|>\\n``, and the tokenizer's eos ``<|endoftext|>`` once after the last message (not with a
  generation prompt). bos ``<s>``, eos and pad ``<|endoftext|>``; the generation config lists
  ``<|endoftext|>``, ``<|assistant|>`` and ``<|end|>``. Phi-3's fused ``qkv_proj`` and
  ``gate_up_proj`` layers.
- ``gemma2``: gemma-2-2b-it: ``<bos>`` then ``<start_of_turn>user\\n…<end_of_turn>\\n`` and
  ``<start_of_turn>model\\n…<end_of_turn>\\n``, texts trimmed; a system message raises ("System
  role not supported"), so do roles that do not alternate. bos ``<bos>``, eos ``<eos>``, pad
  ``<pad>``; the generation config lists ``<eos>`` and ``<end_of_turn>``. Attention and final
  logit soft-capping, sliding and full attention layers alternating.
- ``gemma3_text``: gemma-3-1b-it: as Gemma 2, but a system message is folded into the first user
  turn (its text, a blank line, then the user's). Alternating layers as Gemma 2, and its
  soft-capping too (the real Gemma 3 has none; kept so both Gemmas exercise the loss's capping).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

CONTEXT_LENGTH = 256

QWEN_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Answer briefly and politely.",
    "What is the capital of France? Paris is the capital of France.",
    "Fine-tuning teaches a model the style of its examples.",
    "user assistant system model tool function weight content role messages think",
    "0123456789 !?.,;:'\"()[]{}<>/\\|-_=+*&^%$#@~` \n\t",
]

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN3_TEMPLATE = (
    "{%- set ns = namespace(last_query=-1) %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- set content = message['content'] if message['content'] is string else '' %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set reasoning = '' %}"
    "{%- if message['reasoning_content'] is string %}"
    "{%- set reasoning = message['reasoning_content'] %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n')"
    ".split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- else %}"
    "{{- '<|im_start|>assistant\\n' + content }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- message['content'] + eos_token }}"
    "{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported!') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

PHI3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] in ['system', 'user', 'assistant'] %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- else %}{{- eos_token }}"
    "{%- endif %}"
)

_GEMMA_TURNS = (
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{- message['content'] | trim }}"
    "{{- '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

GEMMA2_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- raise_exception('System role not supported') }}"
    "{%- endif %}"
    "{%- set loop_messages = messages %}{%- set first_user_prefix = '' %}" + _GEMMA_TURNS
)

GEMMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set first_user_prefix = '' %}{%- set loop_messages = messages %}"
    "{%- endif %}" + _GEMMA_TURNS
)


@dataclass(frozen=True)
class FamilySpec:
    """What a family's stand-in is made of."""

    model_type: str
    architecture: str
    config_class: type[PretrainedConfig]
    template: str
    special: tuple[str, ...]
    """Special tokens, the first also the unknown token."""
    bos: str | None
    eos: str
    pad: str | None
    generation_eos: tuple[str, ...]
    """The tokens of the real model's ``generation_config.json`` ``eos_token_id``."""
    end_of_turn: str
    """The token the template writes right after an assistant answer."""
    added: tuple[str, ...] = ()
    """Tokens added to the vocabulary that are not special (Qwen3's think tags)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Config fields besides the shared tiny shape."""


_QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_PHI3_SPECIAL = (
    "<unk>",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
    "<|user|>",
)
_GEMMA_SPECIAL = ("<unk>", "<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")
_GEMMA_CONFIG = {
    "query_pre_attn_scalar": 16,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "sliding_window": 16,
    "layer_types": ["sliding_attention", "full_attention"],
}

FAMILY_SPECS: dict[str, FamilySpec] = {
    spec.model_type: spec
    for spec in (
        FamilySpec(
            "llama",
            "LlamaForCausalLM",
            LlamaConfig,
            LLAMA3_TEMPLATE,
            (
                "<|reserved_special_token_0|>",
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ),
            bos="<|begin_of_text|>",
            eos="<|end_of_text|>",
            pad=None,
            generation_eos=("<|end_of_text|>", "<|eot_id|>"),
            end_of_turn="<|eot_id|>",
        ),
        FamilySpec(
            "qwen2",
            "Qwen2ForCausalLM",
            Qwen2Config,
            QWEN25_TEMPLATE,
            _QWEN_SPECIAL,
            bos=None,
            eos="<|im_end|>",
            pad="<|endoftext|>",
            generation_eos=("<|im_end|>", "<|endoftext|>"),
            end_of_turn="<|im_end|>",
        ),
        FamilySpec(
            "qwen3",
            "Qwen3ForCausalLM",
            Qwen3Config,
            QWEN3_TEMPLATE,
            _QWEN_SPECIAL,
            bos=None,
            eos="<|im_end|>",
            pad="<|endoftext|>",
            generation_eos=("<|im_end|>", "<|endoftext|>"),
            end_of_turn="<|im_end|>",
            added=("<think>", "</think>"),
        ),
        FamilySpec(
            "mistral",
            "MistralForCausalLM",
            MistralConfig,
            MISTRAL_TEMPLATE,
            ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
            bos="<s>",
            eos="</s>",
            pad=None,
            generation_eos=("</s>",),
            end_of_turn="</s>",
            config={"sliding_window": 16},
        ),
        FamilySpec(
            "phi3",
            "Phi3ForCausalLM",
            Phi3Config,
            PHI3_TEMPLATE,
            _PHI3_SPECIAL,
            bos="<s>",
            eos="<|endoftext|>",
            pad="<|endoftext|>",
            generation_eos=("<|endoftext|>", "<|assistant|>", "<|end|>"),
            end_of_turn="<|end|>",
        ),
        FamilySpec(
            "gemma2",
            "Gemma2ForCausalLM",
            Gemma2Config,
            GEMMA2_TEMPLATE,
            _GEMMA_SPECIAL,
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            generation_eos=("<eos>", "<end_of_turn>"),
            end_of_turn="<end_of_turn>",
            config=_GEMMA_CONFIG,
        ),
        FamilySpec(
            "gemma3_text",
            "Gemma3ForCausalLM",
            Gemma3TextConfig,
            GEMMA3_TEMPLATE,
            _GEMMA_SPECIAL,
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            generation_eos=("<eos>", "<end_of_turn>"),
            end_of_turn="<end_of_turn>",
            config=_GEMMA_CONFIG,
        ),
    )
}
"""Every family of ``catalog/families.py``, by ``model_type``."""


def build_family_model_dir(path: Path, family: str, *, with_weights: bool = True) -> Path:
    """A tiny model of ``family`` (a ``model_type`` of :data:`FAMILY_SPECS`) in ``path``; without
    weights it holds the tokenizer, ``config.json`` and ``generation_config.json`` only."""
    spec = FAMILY_SPECS[family]
    tokenizer = _tokenizer(spec)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))
    config = spec.config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **spec.config,
    )
    config.architectures = [spec.architecture]
    eos_ids = [int(tokenizer.convert_tokens_to_ids(token)) for token in spec.generation_eos]
    generation = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": eos_ids if len(eos_ids) > 1 else eos_ids[0],
    }
    if with_weights:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        model.save_pretrained(str(path))
    else:
        config.save_pretrained(str(path))
    # the real models' generation configs, written over whatever save_pretrained derived
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return path


def _tokenizer(spec: FamilySpec) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(spec.special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer)
    if spec.added:
        tokenizer.add_tokens([AddedToken(token, special=False) for token in spec.added])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        unk_token=spec.special[0],
        additional_special_tokens=[t for t in spec.special if t not in (spec.bos, spec.eos)],
    )
    fast.chat_template = spec.template
    return fast
