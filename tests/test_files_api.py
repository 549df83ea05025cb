"""The files API, driven by the official ``openai`` client against a live server."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import openai
import pytest
from openai.types import FileDeleted, FileObject

from tests.conftest import ADMIN_KEY, LiveServer
from tests.helpers import chat_example, jsonl, training_file
from tunesmith.files import sanitize_filename


def stored_blobs(live: LiveServer) -> list[Path]:
    root = live.settings.blob_dir()
    return sorted(p for sub in ("files", "tmp") for p in (root / sub).iterdir())


def test_create_retrieve_content_delete(client: openai.OpenAI, live: LiveServer) -> None:
    data = training_file(12)
    created = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert isinstance(created, FileObject)
    assert created.id.startswith("file-")
    assert created.bytes == len(data)
    assert created.filename == "train.jsonl"
    assert created.purpose == "fine-tune"
    assert created.status == "processed"
    assert abs(created.created_at - time.time()) < 60

    retrieved = client.files.retrieve(created.id)
    assert retrieved == created
    assert client.files.content(created.id).read() == data

    deleted = client.files.delete(created.id)
    assert isinstance(deleted, FileDeleted)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(created.id)
    assert err.value.body["param"] == "file_id"  # type: ignore[index]
    assert stored_blobs(live) == []


def test_list_pages_with_after_cursor_in_both_orders(client: openai.OpenAI) -> None:
    ids = [
        client.files.create(file=(f"f{i}.jsonl", training_file()), purpose="fine-tune").id
        for i in range(5)
    ]
    first = client.files.list(limit=2, order="asc")
    assert [f.id for f in first.data] == ids[:2]
    assert first.has_more is True
    page = first
    seen = [f.id for f in page.data]
    while page.has_more:
        page = client.files.list(limit=2, order="asc", after=page.data[-1].id)
        seen += [f.id for f in page.data]
    assert seen == ids

    newest_first = [f.id for f in client.files.list(order="desc").data]
    assert newest_first == ids[::-1]
    assert [f.id for f in client.files.list(limit=2, after=ids[2]).data] == ids[1::-1]


def test_list_filters_by_purpose(client: openai.OpenAI) -> None:
    tune = client.files.create(file=("t.jsonl", training_file()), purpose="fine-tune")
    other = client.files.create(file=("notes.txt", b"free text"), purpose="user_data")
    assert [f.id for f in client.files.list(purpose="fine-tune").data] == [tune.id]
    assert [f.id for f in client.files.list(purpose="user_data").data] == [other.id]
    assert other.status == "processed"


def test_bad_jsonl_names_the_line_and_stores_nothing(
    client: openai.OpenAI, live: LiveServer
) -> None:
    data = jsonl([chat_example(0), chat_example(1)]) + b"not json at all\n"
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    message = err.value.message
    assert "Line 3" in message
    assert "not json at all" in message
    assert err.value.body["code"] == "invalid_json"  # type: ignore[index]
    assert client.files.list().data == []
    assert stored_blobs(live) == []


def test_rule_violations_are_stored_with_a_report(client: openai.OpenAI, live: LiveServer) -> None:
    rows = [chat_example(i) for i in range(12)]
    rows[4]["messages"][1]["role"] = "robot"
    rows[9]["messages"] = rows[9]["messages"][:2]  # no assistant
    created = client.files.create(file=("train.jsonl", jsonl(rows)), purpose="fine-tune")
    assert created.status == "error"
    assert created.status_details is not None
    assert "2 error(s)" in created.status_details
    assert "Line 5" in created.status_details

    report = live.http().get(f"/v1/files/{created.id}/validation").json()
    assert report["object"] == "file.validation"
    assert report["valid"] is False
    found = [(e["code"], e["line"], e["message_index"], e["field"]) for e in report["errors"]]
    assert found == [
        ("unrecognized_role", 5, 1, "messages[1].role"),
        ("example_missing_assistant_message", 10, None, "messages"),
    ]
    assert report["n_examples"] == 12


def test_validation_report_of_a_good_file(client: openai.OpenAI, live: LiveServer) -> None:
    created = client.files.create(file=("train.jsonl", training_file(12)), purpose="fine-tune")
    report = live.http().get(f"/v1/files/{created.id}/validation").json()
    assert report["valid"] is True
    assert report["format"] == "chat"
    assert report["error_count"] == 0
    stats = report["statistics"]
    assert stats["messages_per_example"]["min"] == stats["messages_per_example"]["max"] == 3
    assert stats["auto_n_epochs"] == 8  # cookbook rule: 100 // 12
    assert stats["estimated_trained_tokens"] == 8 * stats["billable_tokens"]
    histograms = stats["histograms"]
    assert histograms["messages_per_example"] == {"edges": [3, 4], "counts": [12]}
    tokens = histograms["tokens_per_example"]
    assert sum(tokens["counts"]) == 12 and len(tokens["edges"]) == len(tokens["counts"]) + 1
    assert tokens["edges"][0] == stats["tokens_per_example"]["min"]
    assert report["context_length"] == 256


def test_dry_run_validation_reports_as_an_upload_would_and_stores_nothing(
    client: openai.OpenAI, live: LiveServer
) -> None:
    rows = [chat_example(i) for i in range(12)]
    rows[4]["messages"][1]["role"] = "robot"
    http = live.http()
    checked = http.post("/v1/files/validate", files={"file": ("train.jsonl", jsonl(rows))})
    assert checked.status_code == 200
    report = checked.json()
    stored = client.files.create(file=("train.jsonl", jsonl(rows)), purpose="fine-tune")
    uploaded = http.get(f"/v1/files/{stored.id}/validation").json()
    assert report["file_id"] is None
    assert {**report, "file_id": stored.id} == uploaded  # the same report, field for field
    assert [(e["line"], e["field"]) for e in report["errors"]] == [(5, "messages[1].role")]
    client.files.delete(stored.id)
    assert client.files.list().data == [] and stored_blobs(live) == []


def test_dry_run_validation_refuses_what_an_upload_refuses(live: LiveServer) -> None:
    http = live.http()
    broken = http.post(
        "/v1/files/validate", files={"file": ("t.jsonl", training_file(3) + b"{oops\n")}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "invalid_json"
    assert "Line 4" in broken.json()["error"]["message"]
    no_file = http.post("/v1/files/validate", files={"other": ("t.jsonl", b"x")})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    too_big = http.post(
        "/v1/files/validate",
        files={"file": ("t.jsonl", b"x" * (live.settings.max_file_bytes + 1))},
    )
    assert too_big.status_code == 413
    anonymous = live.http(key=None).post(
        "/v1/files/validate", files={"file": ("t.jsonl", training_file())}
    )
    assert anonymous.status_code == 401
    assert stored_blobs(live) == []


def test_validation_is_only_for_fine_tune_files(client: openai.OpenAI, live: LiveServer) -> None:
    other = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    response = live.http().get(f"/v1/files/{other.id}/validation")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file_id"


@pytest.mark.parametrize(
    ("filename", "purpose", "param"),
    [
        ("train.csv", "fine-tune", "file"),
        ("train.jsonl", "fine-tuning", "purpose"),
    ],
)
def test_bad_upload_fields_are_refused(
    client: openai.OpenAI, live: LiveServer, filename: str, purpose: str, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=(filename, training_file()), purpose=purpose)  # type: ignore[arg-type]
    assert err.value.body["param"] == param  # type: ignore[index]
    assert stored_blobs(live) == []


def test_missing_purpose_and_missing_file(live: LiveServer) -> None:
    http = live.http()
    no_purpose = http.post("/v1/files", files={"file": ("t.jsonl", training_file())})
    assert no_purpose.status_code == 400
    assert no_purpose.json()["error"]["param"] == "purpose"
    no_file = http.post(
        "/v1/files", files={"other": ("t.jsonl", b"x")}, data={"purpose": "fine-tune"}
    )
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file"
    not_multipart = http.post("/v1/files", json={"purpose": "fine-tune"})
    assert not_multipart.status_code == 400


@pytest.mark.parametrize(
    "part",
    [
        b'Content-Disposition: form-data; name="file"; filename="t.jsonl"\r\nX[bad]: 1\r\n\r\n',
        b"no header line at all\r\n\r\n",
    ],
    ids=["bad-header-name", "bad-header-line"],
)
def test_a_malformed_multipart_body_is_refused_and_stores_nothing(
    live: LiveServer, part: bytes
) -> None:
    # Found by tests/test_fuzz_api.py: the multipart parser's error answered 500.
    boundary = b"tsboundary"
    body = b"--" + boundary + b"\r\n" + part + training_file() + b"\r\n--" + boundary + b"--\r\n"
    for path in ("/v1/files", "/v1/files/validate"):
        response = live.http().post(
            path,
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=tsboundary"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "file"
    assert stored_blobs(live) == []


def test_filenames_are_sanitised(client: openai.OpenAI, live: LiveServer) -> None:
    created = client.files.create(
        file=("../../etc/passwd.jsonl", training_file()), purpose="fine-tune"
    )
    assert created.filename == "passwd.jsonl"
    assert [p.name for p in stored_blobs(live)] == [created.id]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("..\\..\\win\\evil.jsonl", "evil.jsonl"),
        ("a/b/c\x00d\x1b.jsonl", "cd.jsonl"),
        ("...", "upload"),
        ("", "upload"),
        (None, "upload"),
        (".hidden.jsonl", "hidden.jsonl"),
        ("x" * 300 + ".jsonl", "x" * 255),
    ],
)
def test_sanitize_filename(raw: str | None, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_too_large_answers_413_and_leaves_nothing(client: openai.OpenAI, live: LiveServer) -> None:
    limit = live.settings.max_file_bytes
    big = training_file(12) * (limit // len(training_file(12)) + 1)
    assert len(big) > limit
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.jsonl", big), purpose="fine-tune")
    assert err.value.status_code == 413
    assert err.value.body["code"] == "file_too_large"  # type: ignore[index]
    assert client.files.list().data == []
    assert stored_blobs(live) == []


def test_streamed_upload_over_the_limit_is_cut_off(live: LiveServer) -> None:
    """No Content-Length (chunked): the server stops reading once the limit is passed."""
    limit = live.settings.max_file_bytes
    boundary = "tsboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body():  # type: ignore[no-untyped-def]
        yield head
        chunk = training_file(50)
        sent = 0
        while sent <= limit:
            yield chunk
            sent += len(chunk)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = live.http().post(
        "/v1/files",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert stored_blobs(live) == []


def test_disconnected_upload_leaves_nothing(live: LiveServer) -> None:
    boundary = "tsboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
    ).encode()
    port = int(live.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {ADMIN_KEY}\r\n".encode()
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + b"Content-Length: 1000000\r\n\r\n"
            + head
            + training_file(20)
        )
        deadline = time.monotonic() + 10
        while not list((live.settings.blob_dir() / "tmp").iterdir()):
            assert time.monotonic() < deadline, "the upload never reached the server"
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while stored_blobs(live):
        assert time.monotonic() < deadline, f"left behind: {stored_blobs(live)}"
        time.sleep(0.02)
    assert live.client().files.list().data == []


def test_expired_files_disappear_and_their_bytes_are_removed(
    client: openai.OpenAI, live: LiveServer
) -> None:
    from tunesmith.housekeeping import sweep

    keep = client.files.create(file=("keep.jsonl", training_file()), purpose="fine-tune")
    brief = client.files.create(
        file=("brief.jsonl", training_file()),
        purpose="fine-tune",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert brief.expires_at == brief.created_at + 3600
    runtime = live.app.state.runtime
    swept = sweep(runtime.sessions, runtime.blobs, now=brief.created_at + 3601)
    assert swept.files == [brief.id]
    assert [f.id for f in client.files.list().data] == [keep.id]
    assert not runtime.blobs.file_path(brief.id).exists()
    assert runtime.blobs.file_path(keep.id).exists()
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(brief.id)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
            "expires_after[seconds]",
        ),
        (
            {"expires_after[anchor]": "now", "expires_after[seconds]": "3600"},
            "expires_after[anchor]",
        ),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"},
            "expires_after[seconds]",
        ),
    ],
)
def test_bad_expiry_is_refused(
    client: openai.OpenAI, live: LiveServer, fields: dict[str, str], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(
            file=("t.jsonl", training_file()), purpose="fine-tune", extra_body=fields
        )
    assert err.value.body["param"] == param  # type: ignore[index]
    assert stored_blobs(live) == []


def test_unknown_file_and_bad_query(client: openai.OpenAI, live: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve("file-doesnotexist")
    assert "file-doesnotexist" in err.value.message
    bad_limit = live.http().get("/v1/files", params={"limit": 0})
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["param"] == "limit"
    bad_cursor = live.http().get("/v1/files", params={"after": "file-nope"})
    assert bad_cursor.status_code == 404
    assert bad_cursor.json()["error"]["param"] == "after"
