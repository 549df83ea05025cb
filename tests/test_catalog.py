"""The base-model catalog: the bundled model is always there; operators register local folders,
GGUF files and hub ids; every bad registration is refused with the field to fix and stores
nothing. Uses the toy model and tiny GGUF headers; the real conversion is in
test_bundled_conversion.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.toy_model import CHATML_TEMPLATE, CONTEXT_LENGTH, build_toy_model_dir
from tunesmith.catalog import card
from tunesmith.catalog.base_models import (
    get_base_model,
    list_base_models,
    register_base_model,
    remove_base_model,
)
from tunesmith.catalog.bundled import bundled_gguf, bundled_tokenizer_dir
from tunesmith.catalog.cache import MARKER, gguf_folder
from tunesmith.catalog.gguf_header import NotGguf, read_metadata
from tunesmith.catalog.models import BUNDLED, BaseModelSpec, materialize
from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head

NOW = 1_700_000_000


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade_to_head(engine)
    return make_session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with transaction(sessions) as session:
        yield session


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def register(session: Session, cache_dir: Path, **fields: Any) -> BaseModelSpec:
    return register_base_model(session, cache_dir=cache_dir, now=NOW, **fields)


def write_gguf(path: Path, **metadata: str | int) -> Path:
    """A GGUF file with metadata and no tensors: enough for registration, which reads headers."""
    writer = gguf.GGUFWriter(str(path), str(metadata.pop("arch", "llama")))
    for key, value in metadata.items():
        name = key.replace("__", ".")
        if isinstance(value, str):
            writer.add_string(name, value)
        else:
            writer.add_uint32(name, value)
    writer.add_array("tokenizer.ggml.tokens", ["<|im_end|>", "a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


# -- the bundled model ------------------------------------------------------------------------


def test_the_bundled_model_is_always_in_the_catalog(session: Session) -> None:
    assert list_base_models(session) == [BUNDLED]
    assert get_base_model(session, "SmolLM2-135M-Instruct") is BUNDLED
    assert BUNDLED.source == "bundled"
    assert BUNDLED.tasks == ("chat_completion", "text_generation")
    assert BUNDLED.context_length == 8192
    assert BUNDLED.lora_target_modules == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    assert BUNDLED.lora_learning_rate == 1e-3
    assert BUNDLED.full_learning_rate == 5e-5


def test_the_bundled_model_cannot_be_removed_or_shadowed(session: Session, cache_dir: Path) -> None:
    with pytest.raises(InvalidRequest) as removed:
        remove_base_model(session, BUNDLED.id)
    assert removed.value.param == "model"
    with pytest.raises(Conflict) as shadowed:
        register(session, cache_dir, model_id=BUNDLED.id, source="bundled")
    assert shadowed.value.param == "id"
    assert list_base_models(session) == [BUNDLED]


# -- registering ------------------------------------------------------------------------------


def test_a_local_folder_is_registered_with_defaults(
    sessions: sessionmaker[Session], cache_dir: Path, toy_model_dir: Path
) -> None:
    with transaction(sessions) as session:
        spec = register(session, cache_dir, model_id="toy", source=str(toy_model_dir))
    assert spec == BaseModelSpec(
        id="toy",
        source=str(toy_model_dir.resolve()),
        tasks=("chat_completion", "text_generation"),
        context_length=CONTEXT_LENGTH,  # from config.json max_position_embeddings
        lora_target_modules=BUNDLED.lora_target_modules,
        lora_learning_rate=1e-3,
        full_learning_rate=5e-5,
        created_at=NOW,
        config=json.loads((toy_model_dir / "config.json").read_text()),
        status="registering",  # until the background part (catalog.registration) has run
        progress={"stage": "checking", "done_bytes": 0, "total_bytes": 0},
        updated_at=NOW,
    )
    with transaction(sessions) as session:  # a row, read back by a new session
        assert get_base_model(session, "toy") == spec
        assert list_base_models(session) == [BUNDLED, spec]
    assert materialize(spec, cache_dir) == toy_model_dir.resolve()  # used where it lies
    assert not cache_dir.exists()  # nothing copied or converted


def test_explicit_fields_are_kept(session: Session, cache_dir: Path, toy_model_dir: Path) -> None:
    spec = register(
        session,
        cache_dir,
        model_id="toy-tuned",
        source=str(toy_model_dir),
        tasks=["text_generation", "text_generation"],
        context_length=128,
        lora_target_modules=["q_proj", "v_proj"],
        lora_learning_rate=2e-4,
        full_learning_rate=1e-5,
    )
    assert spec.tasks == ("text_generation",)
    assert spec.context_length == 128
    assert spec.lora_target_modules == ("q_proj", "v_proj")
    assert (spec.lora_learning_rate, spec.full_learning_rate) == (2e-4, 1e-5)


def test_a_relative_path_is_stored_absolute(
    session: Session, cache_dir: Path, toy_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(toy_model_dir.parent)
    spec = register(session, cache_dir, model_id="toy", source=f"./{toy_model_dir.name}")
    assert spec.source == str(toy_model_dir.resolve())


def test_a_gguf_file_is_registered_from_its_header(session: Session, cache_dir: Path) -> None:
    spec = register(session, cache_dir, model_id="smol-gguf", source=str(bundled_gguf()))
    assert spec.source == str(bundled_gguf().resolve())
    assert spec.context_length == 8192  # llama.context_length
    assert spec.tasks == ("chat_completion", "text_generation")
    assert [m.id for m in list_base_models(session)] == [BUNDLED.id, "smol-gguf"]


def test_the_gguf_header_is_read_without_the_tensors() -> None:
    metadata = read_metadata(bundled_gguf())
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.context_length"] == 8192
    assert metadata["tokenizer.ggml.eos_token_id"] == 2
    assert "<|im_end|>" in str(metadata["tokenizer.chat_template"])
    assert "tokenizer.ggml.tokens" not in metadata  # arrays are skipped


def test_a_truncated_or_foreign_file_is_not_gguf(tmp_path: Path) -> None:
    data = bundled_gguf().read_bytes()[:1000]
    (tmp_path / "cut.gguf").write_bytes(data)
    with pytest.raises(NotGguf, match="truncated"):
        read_metadata(tmp_path / "cut.gguf")
    (tmp_path / "text.gguf").write_text("hello")
    with pytest.raises(NotGguf, match="magic"):
        read_metadata(tmp_path / "text.gguf")


def test_a_hub_model_is_checked_from_its_configuration(
    session: Session, cache_dir: Path, toy_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loading code is huggingface_hub's; the hub itself is replaced by the toy folder."""
    calls: list[tuple[str, Path, list[str]]] = []

    def snapshot_download(repo_id: str, *, cache_dir: Path, allow_patterns: list[str]) -> str:
        calls.append((repo_id, Path(cache_dir), allow_patterns))
        snapshot = Path(cache_dir) / "snapshots" / repo_id.replace("/", "--")
        if not snapshot.exists():
            shutil.copytree(toy_model_dir, snapshot)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    spec = register(session, cache_dir, model_id="toy-hub", source="acme/toy-chat")
    assert spec.source == "acme/toy-chat"
    assert spec.context_length == CONTEXT_LENGTH
    assert "*.safetensors" not in calls[0][2]  # registration fetches no weights
    folder = materialize(spec, cache_dir)
    assert "*.safetensors" in calls[1][2]
    assert calls[1][1] == cache_dir / "hub"
    assert (folder / "model.safetensors").is_file()


def test_an_unreachable_hub_is_reported_on_source(
    session: Session, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def snapshot_download(repo_id: str, **_: Any) -> str:
        raise OSError("no route to host")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with pytest.raises(InvalidRequest, match="no route to host") as refused:
        register(session, cache_dir, model_id="far", source="acme/far-away")
    assert refused.value.param == "source"
    assert "register its folder by path" in refused.value.message


# -- bad registrations --------------------------------------------------------------------------


def refused(session: Session, cache_dir: Path, error: type[Exception], **fields: Any) -> Any:
    with pytest.raises(error) as caught:
        register(session, cache_dir, **fields)
    assert list_base_models(session) == [BUNDLED]  # nothing stored
    return caught.value


def test_a_missing_path_is_refused(session: Session, cache_dir: Path, tmp_path: Path) -> None:
    error = refused(
        session, cache_dir, InvalidRequest, model_id="m", source=str(tmp_path / "nowhere")
    )
    assert error.param == "source"
    assert "No file or folder" in error.message
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source="not a model")
    assert error.param == "source"


def test_a_folder_without_config_is_refused(
    session: Session, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    error = refused(
        session, cache_dir, InvalidRequest, model_id="m", source=str(tmp_path / "empty")
    )
    assert error.param == "source"
    assert "no config.json" in error.message


def test_a_folder_without_safetensors_weights_is_refused(
    session: Session, cache_dir: Path, tmp_path: Path
) -> None:
    folder = build_toy_model_dir(tmp_path / "no-weights", with_weights=False)
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source=str(folder))
    assert error.param == "source"
    assert "safetensors" in error.message


def test_chat_needs_a_template_that_ends_turns_with_eos(
    session: Session, cache_dir: Path, tmp_path: Path
) -> None:
    folder = build_toy_model_dir(tmp_path / "no-template", chat_template="")
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source=str(folder))
    assert error.param == "tasks"
    assert "no chat template" in error.message
    assert "['text_generation']" in error.message
    # The same folder is fine for plain text generation.
    spec = register(session, cache_dir, model_id="m", source=str(folder), tasks=["text_generation"])
    assert spec.tasks == ("text_generation",)
    remove_base_model(session, "m")

    no_eos = CHATML_TEMPLATE.replace("'<|im_end|>' + '\\n'", "'\\n'")
    folder = build_toy_model_dir(tmp_path / "no-eos", chat_template=no_eos)
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source=str(folder))
    assert error.param == "tasks"
    assert "'<|im_end|>'" in error.message


def test_unknown_tasks_are_refused(session: Session, cache_dir: Path, toy_model_dir: Path) -> None:
    for tasks in (["chat_completion", "summarization"], [], "chat_completion"):
        error = refused(
            session,
            cache_dir,
            InvalidRequest,
            model_id="m",
            source=str(toy_model_dir),
            tasks=tasks,
        )
        assert error.param == "tasks"
    with pytest.raises(InvalidRequest) as listed:
        list_base_models(session, task="summarization")
    assert listed.value.param == "task"


def test_a_duplicate_id_is_a_conflict(
    session: Session, cache_dir: Path, toy_model_dir: Path
) -> None:
    register(session, cache_dir, model_id="toy", source=str(toy_model_dir))
    with pytest.raises(Conflict) as caught:
        register(session, cache_dir, model_id="toy", source=str(bundled_gguf()))
    assert caught.value.param == "id"
    assert get_base_model(session, "toy").source == str(toy_model_dir.resolve())


@pytest.mark.parametrize("model_id", ["", "org/name", "ft:x", "-leading", "x" * 101])
def test_bad_ids_are_refused(
    session: Session, cache_dir: Path, toy_model_dir: Path, model_id: str
) -> None:
    error = refused(
        session, cache_dir, InvalidRequest, model_id=model_id, source=str(toy_model_dir)
    )
    assert error.param == "id"


@pytest.mark.parametrize("field", ["lora_learning_rate", "full_learning_rate"])
@pytest.mark.parametrize("value", [0, -1e-4, 1.5, float("nan"), float("inf"), True, "1e-3"])
def test_bad_learning_rates_are_refused(
    session: Session, cache_dir: Path, toy_model_dir: Path, field: str, value: object
) -> None:
    error = refused(
        session,
        cache_dir,
        InvalidRequest,
        model_id="m",
        source=str(toy_model_dir),
        **{field: value},
    )
    assert error.param == field


def test_bad_target_modules_are_refused(
    session: Session, cache_dir: Path, toy_model_dir: Path
) -> None:
    for modules in ([], "q_proj", ["q_proj", "has space"]):
        error = refused(
            session,
            cache_dir,
            InvalidRequest,
            model_id="m",
            source=str(toy_model_dir),
            lora_target_modules=modules,
        )
        assert error.param == "lora_target_modules"
    error = refused(
        session,
        cache_dir,
        InvalidRequest,
        model_id="m",
        source=str(toy_model_dir),
        lora_target_modules=["q_proj", "query_key_value"],
    )
    assert error.param == "lora_target_modules"
    assert "'query_key_value' names no layer" in error.message
    assert "q_proj" in error.message  # the layers it does have


def test_bad_context_lengths_are_refused(
    session: Session, cache_dir: Path, toy_model_dir: Path
) -> None:
    for length in (0, -5, 2.5, CONTEXT_LENGTH + 1):
        error = refused(
            session,
            cache_dir,
            InvalidRequest,
            model_id="m",
            source=str(toy_model_dir),
            context_length=length,
        )
        assert error.param == "context_length"


def test_bad_gguf_files_are_refused(session: Session, cache_dir: Path, tmp_path: Path) -> None:
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 16)
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source=str(not_gguf))
    assert (error.param, "not a .gguf file" in error.message) == ("source", True)

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\3\4 a zip file")
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source=str(fake))
    assert (error.param, "magic" in error.message) == ("source", True)

    alien = write_gguf(tmp_path / "alien.gguf", arch="alien", alien__context_length=512)
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source=str(alien))
    assert (error.param, "'alien'" in error.message) == ("source", True)

    plain = write_gguf(tmp_path / "plain.gguf", llama__context_length=512)
    error = refused(session, cache_dir, InvalidRequest, model_id="m", source=str(plain))
    assert (error.param, "tokenizer.chat_template" in error.message) == ("tasks", True)
    spec = register(session, cache_dir, model_id="m", source=str(plain), tasks=["text_generation"])
    assert spec.context_length == 512


# -- listing and removing -----------------------------------------------------------------------


def test_list_filters_by_task(session: Session, cache_dir: Path, toy_model_dir: Path) -> None:
    chat = register(session, cache_dir, model_id="chat", source=str(toy_model_dir))
    text = register(
        session, cache_dir, model_id="text", source=str(toy_model_dir), tasks=["text_generation"]
    )
    assert list_base_models(session, task="chat_completion") == [BUNDLED, chat]
    assert list_base_models(session, task="text_generation") == [BUNDLED, chat, text]


def test_a_registered_model_is_removed(
    session: Session, cache_dir: Path, toy_model_dir: Path
) -> None:
    register(session, cache_dir, model_id="toy", source=str(toy_model_dir))
    remove_base_model(session, "toy")
    assert list_base_models(session) == [BUNDLED]
    assert (toy_model_dir / "config.json").is_file()  # the model's files are left alone
    for call in (get_base_model, remove_base_model):
        with pytest.raises(NotFound) as missing:
            call(session, "toy")
        assert missing.value.param == "model"


def test_a_folder_that_disappeared_says_what_to_do(tmp_path: Path) -> None:
    folder = build_toy_model_dir(tmp_path / "toy", with_weights=False)
    spec = BaseModelSpec("gone", str(folder), ("text_generation",), 256, ("q_proj",), 1e-3, 5e-5)
    shutil.rmtree(folder)
    with pytest.raises(FileNotFoundError, match="register it again"):
        materialize(spec, tmp_path / "models")


# -- model cards: licence and chat template, read from files ---------------------------------------

CHAT = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"


def test_the_bundled_licence_and_template_come_from_its_gguf_header(tmp_path: Path) -> None:
    header = read_metadata(bundled_gguf())
    assert card.license_of(BUNDLED) == header["general.license"] == "apache-2.0"
    # Before any conversion: the header's template; once converted, the folder's.
    assert card.base_chat_template(BUNDLED, tmp_path) == header["tokenizer.chat_template"]
    converted = bundled_tokenizer_dir(tmp_path)
    converted.mkdir(parents=True)
    (converted / "chat_template.jinja").write_text(CHAT)
    assert card.base_chat_template(BUNDLED, tmp_path) == header["tokenizer.chat_template"]
    (converted / MARKER).write_text("")  # only a complete folder counts
    assert card.base_chat_template(BUNDLED, tmp_path) == CHAT


def test_a_gguf_licence_is_read_once_per_version_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_gguf(tmp_path / "m.gguf", general__license="mit", tokenizer__chat_template=CHAT)
    spec = BaseModelSpec("m", str(path), ("chat_completion",), 512, ("q_proj",), 1e-3, 5e-5)
    reads: list[Path] = []

    def counting(file: Path) -> dict[str, Any]:
        reads.append(file)
        return read_metadata(file)

    monkeypatch.setattr(card, "read_metadata", counting)
    assert card.license_of(spec) == "mit"
    assert card.base_chat_template(spec, tmp_path / "models") == CHAT
    assert card.license_of(spec) == "mit"
    assert reads == [path]  # the header was read once
    write_gguf(path, general__license="llama3.2", tokenizer__chat_template=CHAT)
    os.utime(path, ns=(1, 1))  # a new version, whatever the clock's resolution
    assert card.license_of(spec) == "llama3.2"
    assert len(reads) == 2
    converted = gguf_folder(tmp_path / "models", path)
    converted.mkdir(parents=True)
    (converted / "chat_template.jinja").write_text("converted")
    (converted / MARKER).write_text(str(path))
    assert card.base_chat_template(spec, tmp_path / "models") == "converted"


def test_a_gguf_without_a_licence_or_file_has_none(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "plain.gguf", llama__context_length=512)
    spec = BaseModelSpec("p", str(path), ("text_generation",), 512, ("q_proj",), 1e-3, 5e-5)
    assert card.license_of(spec) is None
    assert card.base_chat_template(spec, tmp_path) is None
    path.unlink()
    assert card.license_of(spec) is None
    assert card.base_chat_template(spec, tmp_path) is None
    (tmp_path / "plain.gguf").write_bytes(b"not a gguf")
    assert card.license_of(spec) is None


@pytest.mark.parametrize(
    ("readme", "license_"),
    [
        ("---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# Toy\n", "apache-2.0"),
        ("\ufeff---\ntags: [chat]\nlicense: mit\n---\nlicense: not this one\n", "mit"),
        ("---\nlanguage: en\n---\nlicense: mit\n", None),  # not in the front matter
        ("# Toy\n\nlicense: mit\n", None),  # no front matter
        ("---\nlicense: mit\n", None),  # front matter never closed
        ("---\nlicense: [unclosed\n---\n", None),  # not YAML
        ("---\nlicense:\n  - mit\n---\n", None),  # not a string
    ],
)
def test_a_folder_licence_comes_from_its_model_card(
    tmp_path: Path, readme: str, license_: str | None
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    spec = BaseModelSpec("f", str(folder), ("chat_completion",), 256, ("q_proj",), 1e-3, 5e-5)
    assert card.license_of(spec) is None  # no README.md
    (folder / "README.md").write_text(readme)
    assert card.license_of(spec) == license_


def test_a_folder_chat_template_is_read_as_transformers_saves_it(tmp_path: Path) -> None:
    folder = build_toy_model_dir(tmp_path / "toy", with_weights=False)
    assert (folder / "chat_template.jinja").read_text() == CHATML_TEMPLATE
    assert card.chat_template_in(folder) == CHATML_TEMPLATE
    # Older transformers keep it in tokenizer_config.json, alone or as named templates.
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT}))
    assert card.chat_template_in(folder) == CHAT
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": CHAT}]
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": named}))
    assert card.chat_template_in(folder) == CHAT
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert card.chat_template_in(folder) is None
    (folder / "tokenizer_config.json").write_text("{not json")
    assert card.chat_template_in(folder) is None
    assert card.chat_template_in(tmp_path / "nowhere") is None


def test_model_cards_are_read_without_torch_or_transformers() -> None:
    """The API process lists models; these modules must not pull a deep-learning stack in."""
    code = (
        "import sys, tunesmith.fine_tuned, tunesmith.catalog.card; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
