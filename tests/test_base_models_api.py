"""``/v1/base_models``: operators register models over the API; the checks run in the request and
a refusal names the field and stores nothing; the long part runs in the background to ready or
failed; copies survive the original's removal; changed weights stop a job; users read the
catalog, only the admin changes it. Uses the toy model (seconds) and a cut-off copy of the
bundled GGUF (whose conversion fails at once)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOY_BASE, LiveServer, run_live
from tests.helpers import training_file, wait_for_job, wait_registered
from tests.toy_model import CHATML_TEMPLATE, CONTEXT_LENGTH, build_toy_model_dir
from tunesmith.api.app import create_app
from tunesmith.catalog.base_models import register_base_model
from tunesmith.catalog.spec import BUNDLED
from tunesmith.settings import Settings
from tunesmith.store.db import transaction

FAST = {"n_epochs": 1, "batch_size": 2}


def toy_copy(toy_model_dir: Path, where: Path) -> Path:
    """A folder of its own holding the toy model, for a test to change or remove."""
    return Path(shutil.copytree(toy_model_dir, where))


def catalog_ids(http: httpx.Client, **params: str) -> list[str]:
    response = http.get("/v1/base_models", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return [entry["id"] for entry in response.json()["data"]]


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def safetensors_weights(folder: Path) -> int:
    """The toy model's weights, counted through the safetensors library itself."""
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as tensors:
            total += sum(tensors.get_tensor(name).numel() for name in tensors.keys())  # noqa: SIM118
    return total


def write_truncated_gguf(path: Path) -> Path:
    """A tiny Llama GGUF whose header is whole (so the request's checks pass) and whose one
    tensor is cut short: its conversion fails for real, at once."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<|im_end|>", "a", "b"])
    writer.add_token_merges(["a b"])
    writer.add_eos_token_id(0)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}")
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.truncate(path, path.stat().st_size - 40)
    return path


def start_job(live: LiveServer, model: str) -> Any:
    client = live.client()
    training = client.files.create(file=("t.jsonl", training_file(10)), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=model,
        training_file=training.id,
        method={"type": "supervised", "supervised": {"hyperparameters": FAST}},
    )


# -- refusals ------------------------------------------------------------------------------------


def _no_config(folder: Path) -> dict[str, Any]:
    (folder / "config.json").unlink()
    return {}


def _no_weights(folder: Path) -> dict[str, Any]:
    for file in folder.glob("*.safetensors"):
        file.unlink()
    return {}


def _fields(**fields: Any) -> Callable[[Path], dict[str, Any]]:
    return lambda _folder: fields


REFUSALS = {
    "no config.json": (_no_config, "source", "no config.json"),
    "no safetensors": (_no_weights, "source", "no *.safetensors"),
    "unknown LoRA target": (
        _fields(lora_target_modules=["wq"]),
        "lora_target_modules",
        "'wq' names no layer",
    ),
    "bad id": (_fields(id="org/model"), "id", "no '/' or ':'"),
    "bad task": (_fields(tasks=["summarization"]), "tasks", "Unknown task 'summarization'"),
    "rate out of range": (_fields(lora_learning_rate=3), "lora_learning_rate", "between 0 and 1"),
    "context too long": (
        _fields(context_length=100_000),
        "context_length",
        f"at most {CONTEXT_LENGTH}",
    ),
    "unknown field": (_fields(colour="red"), "colour", "Extra inputs"),
    "wrong type": (_fields(copy="yes"), "copy", "valid boolean"),
    "long source": (_fields(source="/x" * 3000), "source", "longer than 4096"),
    "long licence": (_fields(license="x" * 101), "license", "1 to 100"),
    "too many targets": (
        _fields(lora_target_modules=["q_proj"] * 65),
        "lora_target_modules",
        "at most 64",
    ),
    "hub copy": (_fields(source="acme/model", copy=True), "copy", "Hugging Face Hub"),
}


@pytest.mark.parametrize(("change", "param", "says"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_bad_registration_is_a_400_naming_the_field_and_stores_nothing(
    live: LiveServer,
    toy_model_dir: Path,
    tmp_path: Path,
    change: Callable[[Path], dict[str, Any]],
    param: str,
    says: str,
) -> None:
    folder = toy_copy(toy_model_dir, tmp_path / "model")
    body = {"id": "mine", "source": str(folder), **change(folder)}
    with live.http() as http:
        error = error_of(http.post("/v1/base_models", json=body), 400)
        assert error["param"] == param
        assert says in error["message"]
        assert catalog_ids(http) == [BUNDLED.id]
    assert not (live.settings.home / "base-models").exists()


def test_chat_needs_a_template_that_ends_the_assistant_turn_with_eos(
    live: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    weights = toy_model_dir / "model.safetensors"
    no_template = build_toy_model_dir(tmp_path / "plain", chat_template="", with_weights=False)
    shutil.copy(weights, no_template)
    never_ends = build_toy_model_dir(
        tmp_path / "endless",
        chat_template=CHATML_TEMPLATE.replace("'<|im_end|>' + ", ""),
        with_weights=False,
    )
    shutil.copy(weights, never_ends)
    with live.http() as http:
        for folder, says in ((no_template, "no chat template"), (never_ends, "eos token")):
            error = error_of(
                http.post("/v1/base_models", json={"id": "m", "source": str(folder)}), 400
            )
            assert (error["param"], says in error["message"]) == ("tasks", True)
        assert catalog_ids(http) == [BUNDLED.id]
        # a model without a usable template is fine for plain text generation
        body = {"id": "m", "source": str(no_template), "tasks": ["text_generation"]}
        assert http.post("/v1/base_models", json=body).status_code == 200


def test_a_duplicate_id_is_409(live: LiveServer, toy_model_dir: Path) -> None:
    with live.http() as http:
        first = http.post("/v1/base_models", json={"id": "toy", "source": str(toy_model_dir)})
        assert first.status_code == 200, first.text
        for model_id in ("toy", BUNDLED.id):
            body = {"id": model_id, "source": str(toy_model_dir)}
            error = error_of(http.post("/v1/base_models", json=body), 409)
            assert (error["param"], error["code"]) == ("id", "duplicate_model")


# -- registering ---------------------------------------------------------------------------------


def test_a_registration_shows_its_progress_and_ends_ready_with_the_models_facts(
    live: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    folder = toy_copy(toy_model_dir, tmp_path / "model")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# A toy\n")
    with live.http() as http:
        response = http.post("/v1/base_models", json={"id": "toy", "source": str(folder)})
        assert response.status_code == 200, response.text
        entry = response.json()
        assert (entry["object"], entry["status"]) == ("base_model", "registering")
        assert entry["progress"]["stage"] == "checking"
        assert entry["family"] == "llama"  # read by the request's checks
        ready = wait_registered(http, "toy")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert ready["status"] == "ready" and ready["error"] is None
    assert ready["progress"] == {"stage": "done", "done_bytes": size, "total_bytes": size}
    assert ready["parameters"] == safetensors_weights(folder)
    assert (ready["source"], ready["source_kind"], ready["copied"]) == (
        str(folder),
        "folder",
        False,
    )
    assert ready["family_label"] == "Llama (Llama 3.x, SmolLM2)"
    assert ready["context_length"] == CONTEXT_LENGTH
    assert ready["chat_template"] == CHATML_TEMPLATE
    assert ready["license"] == "mit"
    assert ready["lora_target_modules"] == ready["suggested_lora_target_modules"]
    assert ready["lora_target_modules"] == list(BUNDLED.lora_target_modules)
    assert (ready["servable"], ready["serving_refusal"]) == (True, None)
    with live.http() as http:
        bundled = http.get("/v1/base_models").json()["data"][0]
    assert (bundled["id"], bundled["source_kind"], bundled["status"]) == (
        BUNDLED.id,
        "bundled",
        "ready",
    )


def test_a_truncated_gguf_fails_naming_the_cause_and_cannot_train_or_deploy(
    live: LiveServer, tmp_path: Path
) -> None:
    broken = write_truncated_gguf(tmp_path / "Broken.gguf")
    with live.http() as http:
        response = http.post("/v1/base_models", json={"id": "broken", "source": str(broken)})
        assert response.status_code == 200, response.text
        assert response.json()["family"] == "llama"  # from the GGUF header
        failed = wait_registered(http, "broken")
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "conversion_failed"
        assert str(broken) in failed["error"]["message"]
        assert "damaged or truncated" in failed["error"]["message"]
        deploy = http.post("/v1/deployments", json={"name": "b", "model": "broken"})
        error = error_of(deploy, 400)
        assert (error["param"], error["code"]) == ("model", "model_not_ready")
        assert "failed to register" in error["message"] and "truncated" in error["message"]
        upload = http.post(
            "/v1/files",
            files={"file": ("t.jsonl", training_file(10))},
            data={"purpose": "fine-tune"},
        )
        job = {"model": "broken", "training_file": upload.json()["id"]}
        error = error_of(http.post("/v1/fine_tuning/jobs", json=job), 400)
        assert (error["param"], error["code"]) == ("model", "model_not_ready")


def test_a_server_restart_resumes_a_registration(settings: Settings, toy_model_dir: Path) -> None:
    """A server that stopped after the request and before the background part: the next start
    finishes it."""
    app = create_app(settings)
    with transaction(app.state.runtime.sessions) as session:
        register_base_model(
            session,
            model_id="toy",
            source=str(toy_model_dir),
            cache_dir=settings.model_cache_dir(),
            now=int(time.time()),
        )
    for live in run_live(create_app(settings), settings):
        with live.http() as http:
            assert wait_registered(http, "toy")["status"] == "ready"


# -- copies and checksums -----------------------------------------------------------------------


def test_a_copied_model_trains_after_its_original_is_deleted(
    jobs_live: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    original = toy_copy(toy_model_dir, tmp_path / "model")
    with jobs_live.http() as http:
        body = {"id": "kept", "source": str(original), "copy": True}
        assert http.post("/v1/base_models", json=body).status_code == 200
        ready = wait_registered(http, "kept")
        copy = jobs_live.settings.base_model_copy_dir("kept")
        assert (ready["status"], ready["copied"], ready["source"]) == ("ready", True, str(copy))
        assert ready["progress"]["stage"] == "done"
        shutil.rmtree(original)
        job = start_job(jobs_live, "kept")
        done = wait_for_job(jobs_live.client(), job.id, {"succeeded"})
        assert done.fine_tuned_model.startswith("ft:kept:")
        # in use: refused, naming the user; once that is gone, the copy goes with the model
        error = error_of(http.delete("/v1/base_models/kept"), 409)
        assert (error["code"], "ft:kept:" in error["message"]) == ("model_in_use", True)
        built = [m.id for m in jobs_live.client().models.list() if m.base_model == "kept"]
        for model_id in sorted(built, key=len, reverse=True):  # checkpoints first
            if model_id != "kept":
                assert http.delete(f"/v1/models/{model_id}").status_code == 200
        deleted = http.delete("/v1/base_models/kept")
        assert deleted.json() == {"id": "kept", "object": "base_model", "deleted": True}
    deadline = time.monotonic() + 10  # deleted once the response has gone
    while copy.exists():
        assert time.monotonic() < deadline, f"{copy} is still there"
        time.sleep(0.05)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_changed_weights_are_refused_before_a_job_trains(
    jobs_live: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    folder = toy_copy(toy_model_dir, tmp_path / "model")
    with jobs_live.http() as http:
        assert http.post("/v1/base_models", json={"id": "m", "source": str(folder)}).is_success
        assert wait_registered(http, "m")["status"] == "ready"
    weights = folder / "model.safetensors"
    _flip_last_byte(weights)  # same size, new contents: found by hashing, when the job starts
    job = start_job(jobs_live, "m")
    failed = wait_for_job(jobs_live.client(), job.id, {"failed"})
    assert failed.error.code == "base_model_changed"
    assert str(weights) in failed.error.message
    assert "register it again" in failed.error.message
    with weights.open("ab") as grown:  # another size: refused when the job is created
        grown.write(b"\0")
    with jobs_live.http() as http:
        upload = http.post(
            "/v1/files",
            files={"file": ("t.jsonl", training_file(10))},
            data={"purpose": "fine-tune"},
        )
        job_body = {"model": "m", "training_file": upload.json()["id"]}
        error = error_of(http.post("/v1/fine_tuning/jobs", json=job_body), 400)
    assert (error["code"], error["param"]) == ("base_model_changed", "model")
    assert "changed size" in error["message"]


def test_checksums_come_from_the_files_bytes(toy_model_dir: Path, tmp_path: Path) -> None:
    """The recorded sha256 is the file's, computed apart with hashlib over the whole file."""
    import hashlib

    from tunesmith.catalog import checksums

    folder = toy_copy(toy_model_dir, tmp_path / "model")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_text("tools rewrite this")
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("kept")
    taken = checksums.take(folder)
    config = folder / "config.json"
    assert taken["config.json"]["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert taken["config.json"]["size"] == config.stat().st_size
    assert set(taken) == {
        *(p.name for p in toy_model_dir.iterdir() if p.is_file()),
        "extra/notes.txt",
    }  # hidden folders left out


# -- reading and changing the catalog ------------------------------------------------------------


def test_the_catalog_filters_by_task_and_pages_like_the_other_lists(
    live: LiveServer, toy_model_dir: Path
) -> None:
    with live.http() as http:
        text = {"id": "a-text", "source": str(toy_model_dir), "tasks": ["text_generation"]}
        assert http.post("/v1/base_models", json=text).is_success
        assert http.post(
            "/v1/base_models", json={"id": "b-chat", "source": str(toy_model_dir)}
        ).is_success
        assert catalog_ids(http) == [BUNDLED.id, "a-text", "b-chat"]
        assert catalog_ids(http, task="chat_completion") == [BUNDLED.id, "b-chat"]
        assert catalog_ids(http, task="text_generation") == [BUNDLED.id, "a-text", "b-chat"]
        error = error_of(http.get("/v1/base_models", params={"task": "painting"}), 400)
        assert error["param"] == "task"
        first = http.get("/v1/base_models", params={"limit": 2}).json()
        assert (first["object"], first["has_more"]) == ("list", True)
        assert (first["first_id"], first["last_id"]) == (BUNDLED.id, "a-text")
        rest = http.get("/v1/base_models", params={"limit": 2, "after": first["last_id"]}).json()
        assert ([e["id"] for e in rest["data"]], rest["has_more"]) == (["b-chat"], False)


def test_patch_checks_like_post_and_the_bundled_model_is_read_only(
    live: LiveServer, toy_model_dir: Path
) -> None:
    with live.http() as http:
        body = {"id": "m", "source": str(toy_model_dir), "tasks": ["text_generation"]}
        assert http.post("/v1/base_models", json=body).is_success
        wait_registered(http, "m")
        for change, param in (
            ({"lora_learning_rate": 0}, "lora_learning_rate"),
            ({"context_length": CONTEXT_LENGTH + 1}, "context_length"),
            ({"lora_target_modules": ["wq"]}, "lora_target_modules"),
            ({"tasks": ["painting"]}, "tasks"),
            ({"source": "/elsewhere"}, "source"),
        ):
            error = error_of(http.patch("/v1/base_models/m", json=change), 400)
            assert error["param"] == param, change
        changed = http.patch(
            "/v1/base_models/m",
            json={"tasks": ["chat_completion"], "context_length": 64, "license": "apache-2.0"},
        )
        assert changed.status_code == 200, changed.text
        entry = changed.json()
        assert (entry["tasks"], entry["context_length"], entry["license"]) == (
            ["chat_completion"],
            64,
            "apache-2.0",
        )
        assert http.get("/v1/base_models/m").json()["context_length"] == 64
        for method in ("PATCH", "DELETE"):
            kwargs = {"json": {"context_length": 64}} if method == "PATCH" else {}
            response = http.request(method, f"/v1/base_models/{BUNDLED.id}", **kwargs)
            assert error_of(response, 400)["code"] == "builtin_model"
        assert http.get("/v1/base_models/nothing").status_code == 404


def test_a_model_in_use_by_a_job_cannot_be_deleted(jobs_api: LiveServer) -> None:
    job = start_job(jobs_api, TOY_BASE)  # no worker: the job stays active
    with jobs_api.http() as http:
        error = error_of(http.delete(f"/v1/base_models/{TOY_BASE}"), 409)
        assert (error["code"], job.id in error["message"]) == ("model_in_use", True)
        assert TOY_BASE in catalog_ids(http)


def test_users_read_the_catalog_and_only_the_admin_changes_it(
    live: LiveServer, toy_model_dir: Path
) -> None:
    with live.http() as admin:
        created = admin.post(
            "/v1/projects/proj_default/api_keys", json={"name": "o", "role": "owner"}
        )
        assert created.status_code == 200, created.text
        key = created.json()["value"]
        assert admin.post(
            "/v1/base_models", json={"id": "m", "source": str(toy_model_dir)}
        ).is_success
    with live.http(key) as owner:
        assert catalog_ids(owner) == [BUNDLED.id, "m"]
        assert owner.get("/v1/base_models/m").status_code == 200
        for method, path, body in (
            ("POST", "/v1/base_models", {"id": "x", "source": str(toy_model_dir)}),
            ("PATCH", "/v1/base_models/m", {"context_length": 64}),
            ("DELETE", "/v1/base_models/m", None),
        ):
            response = owner.request(method, path, json=body)
            assert response.status_code == 403, (method, response.text)
        assert catalog_ids(owner) == [BUNDLED.id, "m"]


def test_the_parameter_count_reads_headers_only(toy_model_dir: Path, tmp_path: Path) -> None:
    """A safetensors file whose header promises tensors its data does not hold still counts:
    the count comes from the header's shapes, no tensor is read."""
    from tunesmith.catalog.sources import safetensors_parameters

    header = json.dumps(
        {"a.weight": {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, 60]},
         "b.bias": {"dtype": "F32", "shape": [7], "data_offsets": [60, 88]},
         "__metadata__": {"format": "pt"}}
    ).encode()  # fmt: skip
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    assert safetensors_parameters(tmp_path) == 3 * 5 + 7
    assert safetensors_parameters(toy_model_dir) == safetensors_weights(toy_model_dir)


def test_an_unset_target_list_takes_the_familys_phi3_its_fused_layers(
    live: LiveServer, tmp_path: Path
) -> None:
    """A Phi-3 folder (its layer names in the safetensors header, its model_type in the config)
    registered without lora_target_modules gets Phi-3's fused projections."""
    import torch
    from safetensors.torch import save_file

    from tunesmith.catalog.families import FUSED_TARGETS

    folder = build_toy_model_dir(tmp_path / "phi", with_weights=False)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="phi3", architectures=["Phi3ForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    block = "model.layers.0."
    shapes = {
        "model.embed_tokens.weight": (8, 4),
        f"{block}self_attn.qkv_proj.weight": (12, 4),
        f"{block}self_attn.o_proj.weight": (4, 4),
        f"{block}mlp.gate_up_proj.weight": (16, 4),
        f"{block}mlp.down_proj.weight": (4, 8),
        f"{block}input_layernorm.weight": (4,),
    }
    save_file(
        {name: torch.zeros(shape) for name, shape in shapes.items()}, folder / "a.safetensors"
    )
    with live.http() as http:
        response = http.post("/v1/base_models", json={"id": "phi", "source": str(folder)})
        assert response.status_code == 200, response.text
        ready = wait_registered(http, "phi")
    assert ready["lora_target_modules"] == list(FUSED_TARGETS)
    assert ready["suggested_lora_target_modules"] == list(FUSED_TARGETS)
    assert (ready["family"], ready["family_label"]) == ("phi3", "Phi-3 / Phi-3.5 / Phi-4")
    assert ready["parameters"] == 8 * 4 + 12 * 4 + 4 * 4 + 16 * 4 + 4 * 8 + 4


def test_a_hub_model_downloads_its_weights_in_the_background(
    live: LiveServer, toy_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loading code is huggingface_hub's; the Hub itself is replaced by the toy folder. The
    request fetches the configuration and tokenizer only, the background part the weights."""
    fetched: list[list[str]] = []

    def snapshot_download(repo_id: str, *, cache_dir: Path, allow_patterns: list[str]) -> str:
        fetched.append(allow_patterns)
        snapshot = Path(cache_dir) / "snapshots" / repo_id.replace("/", "--")
        if not snapshot.exists():
            shutil.copytree(toy_model_dir, snapshot)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with live.http() as http:
        response = http.post("/v1/base_models", json={"id": "hub", "source": "acme/toy"})
        assert response.status_code == 200, response.text
        assert ["*.safetensors" in patterns for patterns in fetched] == [False]
        ready = wait_registered(http, "hub")
    assert ["*.safetensors" in patterns for patterns in fetched] == [False, True]
    assert (ready["status"], ready["source_kind"], ready["source"]) == ("ready", "hub", "acme/toy")
    assert ready["parameters"] == safetensors_weights(toy_model_dir)


def test_a_registering_model_can_be_removed_but_not_changed(
    live: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    """The request's part done, the background part not yet run (as while it waits its turn)."""
    from tunesmith.catalog import registration

    runtime = live.app.state.runtime
    original = toy_copy(toy_model_dir, tmp_path / "model")
    with transaction(runtime.sessions) as session:
        register_base_model(
            session,
            model_id="waiting",
            source=str(original),
            copy=True,
            cache_dir=live.settings.model_cache_dir(),
            now=int(time.time()),
        )
    with live.http() as http:
        # not offered as a model to fine-tune or deploy until it is ready
        assert "waiting" not in [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert http.get("/v1/base_models/waiting").json()["status"] == "registering"
        error = error_of(http.patch("/v1/base_models/waiting", json={"context_length": 64}), 409)
        assert error["code"] == "model_registering"
        assert http.delete("/v1/base_models/waiting").status_code == 200
        registration.complete(runtime.sessions, live.settings, "waiting")  # its turn comes
        assert http.get("/v1/base_models/waiting").status_code == 404
    assert not live.settings.base_model_copy_dir("waiting").exists()
    assert original.is_dir()  # the original is never touched
