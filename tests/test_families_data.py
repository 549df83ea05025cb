"""Every model family through the data path: registration accepts its folder, its end-of-turn
token is the one its template writes after an answer, the loss covers exactly each answer and
that token, serving's prompt is a prefix of the training text and stops at the token, the
loop's loss is plain masked cross entropy, and what a family's template refuses is a validation
error naming the line, the field and the fix. Tiny models from :mod:`tests.families`."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sqlalchemy.orm import Session

from tests.families import FAMILY_SPECS, build_family_model_dir
from tunesmith.catalog.base_models import register_base_model
from tunesmith.catalog.families import FAMILIES, suggested_lora_targets
from tunesmith.catalog.models import load_causal_lm
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.end_of_turn import find_end_of_turn
from tunesmith.data.examples import IGNORE, TokenizedExample, load_examples, tokenize_unit
from tunesmith.data.rules import ChatUnit, check_example, reserved_pattern
from tunesmith.data.validate import validate_file
from tunesmith.errors import InvalidRequest
from tunesmith.serving.assets import load_assets
from tunesmith.serving.engine import ModelSource
from tunesmith.settings import Settings
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.training.config import TrainConfig
from tunesmith.training.loop import _loss, _pack, _pad_id, train
from tunesmith.training.lora import apply_lora, read_adapter
from tunesmith.validation import FileValidator

ALL = sorted(FAMILY_SPECS)
NOW = 1_700_000_000

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And the quick brown fox?"},
    {"role": "assistant", "content": "It jumps over the lazy dog."},
]


def test_the_fixtures_cover_every_family() -> None:
    assert set(FAMILY_SPECS) == set(FAMILIES)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_family_model_dir(root / family, family) for family in ALL}


@pytest.fixture(scope="module")
def formats(family_dirs: dict[str, Path]) -> dict[str, ChatFormat]:
    return {family: ChatFormat.from_dir(folder) for family, folder in family_dirs.items()}


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade_to_head(engine)
    with transaction(make_session_factory(engine)) as session:
        yield session


def unit(chat: ChatFormat, messages: list[dict[str, Any]]) -> ChatUnit:
    """The example as the validator and training read it (weights honoured)."""
    checked = check_example(
        {"messages": messages}, line=1, reserved=reserved_pattern(chat.special_tokens)
    )
    assert not checked.errors, checked.errors
    assert isinstance(checked.unit, ChatUnit)
    return checked.unit


def conversation(family: str) -> list[dict[str, Any]]:
    """Two answers; Qwen3 trains its last only (its template drops earlier think blocks)."""
    if family == "qwen3":
        return [CONVERSATION[0], {**CONVERSATION[1], "weight": 0}, *CONVERSATION[2:]]
    return CONVERSATION


def trained_answers(family: str) -> list[str]:
    """What the model must learn to write for each trained answer, end-of-turn token included:
    the real templates' output, written out by hand."""
    end = FAMILY_SPECS[family].end_of_turn
    if family == "qwen3":  # the last answer carries an (empty) think block, as Qwen3 writes it
        return [f"<think>\n\n</think>\n\n{CONVERSATION[3]['content']}{end}"]
    return [f"{CONVERSATION[1]['content']}{end}", f"{CONVERSATION[3]['content']}{end}"]


# -- registration and the end-of-turn token --------------------------------------------------


@pytest.mark.parametrize("family", ALL)
def test_registration_accepts_every_family(
    family: str, family_dirs: dict[str, Path], session: Session, tmp_path: Path
) -> None:
    spec = register_base_model(
        session,
        model_id=f"tiny-{family.replace('_', '-')}",
        source=str(family_dirs[family]),
        lora_target_modules=suggested_lora_targets(family),
        cache_dir=tmp_path / "models",
        now=NOW,
    )
    assert spec.context_length == 256
    assert spec.lora_target_modules == suggested_lora_targets(family)


@pytest.mark.parametrize("family", ALL)
def test_the_end_of_turn_token_is_what_the_template_writes_after_an_answer(
    family: str, formats: dict[str, ChatFormat]
) -> None:
    chat = formats[family]
    assert chat.end_of_turn == FAMILY_SPECS[family].end_of_turn
    # not necessarily the tokenizer's eos: Phi-3, Gemma and Llama 3 name another
    eos_differs = {"llama", "phi3", "gemma2", "gemma3_text"}
    assert (chat.end_of_turn != chat.tokenizer.eos_token) is (family in eos_differs)


def test_without_generation_config_a_gemma_folder_is_refused_with_the_fix(
    session: Session, tmp_path: Path
) -> None:
    folder = build_family_model_dir(tmp_path / "gemma", "gemma2")
    (folder / "generation_config.json").unlink()
    with pytest.raises(InvalidRequest) as refused:
        register_base_model(
            session,
            model_id="gemma-no-generation-config",
            source=str(folder),
            lora_target_modules=suggested_lora_targets("gemma2"),
            cache_dir=tmp_path / "models",
            now=NOW,
        )
    error = refused.value
    assert error.param == "tasks"
    assert "'<end_of_turn>\\n'" in error.message  # what the template writes after an answer
    assert "'<eos>'" in error.message  # the only candidate left
    assert "eos_token_id in generation_config.json" in error.message
    assert "['text_generation']" in error.message
    # Naming the end-of-turn token as eos fixes it, as the message says.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**config, "eos_token": "<end_of_turn>"})
    )
    chat = ChatFormat.from_dir(folder)
    assert find_end_of_turn(chat.tokenizer) == "<end_of_turn>"


# -- the loss mask and serving's prompt ------------------------------------------------------


def labelled_runs(example: TokenizedExample) -> list[list[int]]:
    runs: list[list[int]] = []
    previous = IGNORE
    for label in example.labels:
        if label != IGNORE:
            if previous == IGNORE:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


@pytest.mark.parametrize("family", ALL)
def test_the_loss_covers_each_answer_and_its_end_of_turn_token_exactly(
    family: str, formats: dict[str, ChatFormat]
) -> None:
    chat = formats[family]
    example = tokenize_unit(chat, unit(chat, conversation(family)), line=1, max_length=256)
    decoded = [
        chat.tokenizer.decode(run, skip_special_tokens=False) for run in labelled_runs(example)
    ]
    assert decoded == trained_answers(family)
    # the end-of-turn token is the last labelled token of each answer, as one token
    end_id = chat.tokenizer.convert_tokens_to_ids(chat.end_of_turn)
    assert [run[-1] for run in labelled_runs(example)] == [end_id] * len(decoded)


@pytest.mark.parametrize("family", ALL)
def test_serving_prompts_are_prefixes_of_the_training_text_and_stop_at_the_end_of_turn(
    family: str, family_dirs: dict[str, Path], formats: dict[str, ChatFormat]
) -> None:
    chat = formats[family]
    example = tokenize_unit(chat, unit(chat, CONVERSATION[:2]), line=1, max_length=256)
    assets = load_assets(ModelSource(family_dirs[family]), family_dirs[family], family, known={})
    for i in (1, 3):
        rendered = chat.render(CONVERSATION[: i + 1], [False] * i + [True])
        prompt = assets.chat.prompt_text(CONVERSATION[:i], None) if assets.chat else None
        assert prompt is not None and rendered.text.startswith(prompt)
        assert rendered.spans[-1][0] == len(prompt)  # the answer starts where serving's prompt ends
    ids = assets.chat_prompt(CONVERSATION[:1], None)
    assert list(example.input_ids[: len(ids)]) == ids  # serving continues the training tokens
    assert example.labels[len(ids)] != IGNORE and example.labels[len(ids) - 1] == IGNORE
    end_id = chat.tokenizer.convert_tokens_to_ids(chat.end_of_turn)
    assert end_id in assets.stop_ids


# -- the training loss -----------------------------------------------------------------------


def perturb_adapters(model: torch.nn.Module, seed: int) -> None:
    """LoRA starts as a no-op (B is zero); random B makes the adapters count in the loss."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def examples_of(chat: ChatFormat, family: str) -> list[TokenizedExample]:
    rng = random.Random(family)
    examples = []
    for line in range(1, 4):
        words = " ".join(rng.choices(["the", "quick", "fox", "Paris", "dog", "42"], k=8 * line))
        messages = [*conversation(family)[:3], {"role": "assistant", "content": words}]
        examples.append(tokenize_unit(chat, unit(chat, messages), line=line, max_length=256))
    return examples


@pytest.mark.parametrize("family", ALL)
def test_the_training_loss_is_masked_cross_entropy(
    family: str, family_dirs: dict[str, Path], formats: dict[str, ChatFormat]
) -> None:
    chat = formats[family]
    examples = examples_of(chat, family)
    assert max(len(e.input_ids) for e in examples) > 16  # past the sliding windows
    model = load_causal_lm(family_dirs[family])
    apply_lora(model, suggested_lora_targets(family), rank=4, alpha=8.0, dropout=0.0)
    perturb_adapters(model, seed=1)
    model.eval()
    config = TrainConfig(n_epochs=1, batch_size=len(examples)).resolve(
        n_examples=len(examples),
        context_length=256,
        base_learning_rates={"lora": 1e-3, "full": 1e-4},
        default_target_modules=suggested_lora_targets(family),
    )
    with torch.no_grad():
        batches = _pack(examples, config, _pad_id(chat))
        # packed: examples share a row, kept apart by restarting position ids only
        assert sum(b.input_ids.shape[0] for b in batches) < len(examples)
        objective = sum(_loss(model, b, torch.device("cpu"))[0] for b in batches)
        loop_loss = float(objective) / sum(b.loss_weight_total for b in batches)

        total, count = 0.0, 0
        for example in examples:
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1]
            targets = torch.tensor(example.labels[1:])
            total += float(F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum"))
            count += int((targets != IGNORE).sum())
    assert count == sum(e.n_assistant for e in examples)
    assert loop_loss == pytest.approx(total / count, rel=1e-6, abs=1e-6)


def test_a_lora_run_on_fused_phi3_layers_trains_them(
    family_dirs: dict[str, Path], formats: dict[str, ChatFormat], tmp_path: Path
) -> None:
    chat = formats["phi3"]
    path = tmp_path / "train.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}!"},
            ]
        }
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    examples = load_examples(path, chat, max_length=256)
    targets = suggested_lora_targets("phi3")
    config = TrainConfig(n_epochs=3, batch_size=4).resolve(
        n_examples=len(examples),
        context_length=256,
        base_learning_rates={"lora": 5e-3, "full": 1e-3},
        default_target_modules=targets,
    )
    losses: list[float] = []

    class Reporter:
        def on_step(self, metrics: Any) -> None:
            losses.append(metrics.train_loss)

        def on_checkpoint(self, checkpoint: Any) -> None: ...

        def on_message(self, level: str, message: str) -> None: ...

    result = train(
        config=config,
        base_model_id="tiny-phi3",
        base_model_dir=family_dirs["phi3"],
        chat_format=chat,
        train_examples=examples,
        output_dir=tmp_path / "out",
        reporter=Reporter(),
    )
    assert result.status == "succeeded" and len(losses) == config.total_steps == 6
    assert losses[-1] < losses[0] - 0.3
    assert result.final_checkpoint is not None
    adapter_config, weights = read_adapter(result.final_checkpoint)
    assert set(adapter_config["target_modules"]) == set(targets)
    trained = {name.split(".")[-3] for name in weights}  # ...<layer>.lora_A.weight
    assert {"qkv_proj", "gate_up_proj"} <= trained
    assert all(float(w.abs().sum()) > 0 for name, w in weights.items() if "lora_B" in name)
    manifest = json.loads((result.final_checkpoint / "tunesmith.json").read_text())
    assert manifest["end_of_turn"] == "<|end|>"


# -- what a family's template refuses: validation errors at upload ---------------------------


def write_file(path: Path, examples: list[list[dict[str, Any]]]) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in examples))
    return path


GOOD = CONVERSATION[:2]
SYSTEM = [{"role": "system", "content": "Answer briefly."}, *GOOD]
TWO_USERS = [CONVERSATION[0], CONVERSATION[2], CONVERSATION[1]]
THINKING = {"role": "assistant", "content": "<think>France, capital.</think>Paris."}
QWEN3_EARLY_THINKING = [CONVERSATION[0], THINKING, *CONVERSATION[2:]]
QWEN3_LATE_THINKING = [CONVERSATION[0], {**CONVERSATION[1], "weight": 0}, CONVERSATION[2], THINKING]

REFUSED = [
    # family, bad example, field, what the message must say
    ("gemma2", SYSTEM, "messages[0]", "move its text to the start of the first user message"),
    ("mistral", SYSTEM, "messages[0]", "move its text to the start of the first user message"),
    ("mistral", TWO_USERS, "messages[1]", "merge consecutive messages of one role"),
    ("gemma2", TWO_USERS, "messages[1]", "merge consecutive messages of one role"),
    ("gemma3_text", TWO_USERS, "messages[1]", "merge consecutive messages of one role"),
    ("qwen3", QWEN3_EARLY_THINKING, "messages[1]", "set weight 0 on this message"),
]


@pytest.mark.parametrize(
    ("family", "bad", "field", "fix"), REFUSED, ids=[f"{r[0]}-{r[2]}" for r in REFUSED]
)
def test_what_a_template_refuses_is_a_validation_error_with_the_fix(
    family: str,
    bad: list[dict[str, Any]],
    field: str,
    fix: str,
    family_dirs: dict[str, Path],
    formats: dict[str, ChatFormat],
    tmp_path: Path,
) -> None:
    path = write_file(tmp_path / "train.jsonl", [GOOD, GOOD, bad, *[GOOD] * 7])
    # the upload's validator, on an installation that validates with this family's tokenizer
    validator = FileValidator(
        Settings(home=tmp_path / "home", validation_model_dir=family_dirs[family])
    )
    report = validator(path)
    assert [(e.code, e.line, e.field) for e in report.errors.items] == [
        ("template_render_failed", 3, field)
    ]
    assert fix in report.errors.items[0].message
    assert report.summary().endswith(report.errors.items[0].located())
    assert report.summary().startswith(f"1 error(s); first: Line 3, {field}: ")
    # a job re-checks the file against its base model with the same rules
    again = validate_file(path, formats[family], min_examples=0)
    assert again.errors.items == report.errors.items


def test_what_other_families_accept_validates(
    formats: dict[str, ChatFormat], tmp_path: Path
) -> None:
    # Gemma 3 folds the system message into the first user turn; Phi-3, Llama 3 and Qwen2.5
    # train every answer of a long conversation; Qwen3 trains the reasoning of a last answer,
    # and takes an earlier answer (whose think block it drops) with weight 0.
    accepted = {
        "gemma3_text": [SYSTEM],
        "phi3": [SYSTEM, CONVERSATION],
        "qwen2": [SYSTEM, CONVERSATION],
        "llama": [SYSTEM, CONVERSATION],
        "qwen3": [
            QWEN3_LATE_THINKING,
            [CONVERSATION[0], {**THINKING, "weight": 0}, *CONVERSATION[2:]],
        ],
    }
    for family, examples in accepted.items():
        path = write_file(tmp_path / f"{family}.jsonl", examples)
        report = validate_file(path, formats[family], min_examples=0)
        assert report.valid, (family, report.errors.items)
    gemma3 = formats["gemma3_text"].render(SYSTEM, [False, False, True]).text
    assert "<start_of_turn>user\nAnswer briefly.\n\nWhat is the capital" in gemma3
    qwen3 = formats["qwen3"].render([*CONVERSATION[:3], THINKING], [False] * 3 + [True])
    assert qwen3.text.endswith("<think>\nFrance, capital.\n</think>\n\nParis.<|im_end|>\n")


def test_serving_refuses_what_training_refuses_naming_the_message_and_the_fix(
    family_dirs: dict[str, Path],
) -> None:
    folder = family_dirs["gemma2"]
    assets = load_assets(ModelSource(folder), folder, "gemma2", known={})
    with pytest.raises(InvalidRequest) as refused:
        assets.chat_prompt([SYSTEM[0], SYSTEM[1]], None)
    assert refused.value.param == "messages[0]"
    assert "move its text to the start of the first user message" in refused.value.message
    with pytest.raises(InvalidRequest) as refused:
        assets.chat_prompt([CONVERSATION[0], CONVERSATION[1], CONVERSATION[1]], None)
    assert refused.value.param == "messages[2]"
    assert "merge consecutive messages of one role" in refused.value.message
