"""The files API, driven by the official ``openai`` client against a live server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types import FileDeleted, FileObject

from tests.conftest import ADMIN_KEY, LiveServer, run_live
from tests.helpers import chat_example, jsonl, training_file
from tunesmith.api.app import create_app
from tunesmith.files import sanitize_filename
from tunesmith.settings import Settings


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


# -- issue 15, finding 6: one JSONL line is read with a bound ---------------------------------

LINE_CAP = 4096


@pytest.fixture
def line_capped_live(settings: Settings) -> Iterator[LiveServer]:
    capped = settings.model_copy(update={"max_jsonl_line_bytes": LINE_CAP})
    yield from run_live(create_app(capped), capped)


def _long_example(size: int) -> dict[str, object]:
    row = chat_example(99)
    row["messages"][2]["content"] = "a" * size
    return row


def test_a_line_over_the_cap_is_refused_naming_the_line(line_capped_live: LiveServer) -> None:
    live = line_capped_live
    rows = [chat_example(i) for i in range(11)] + [_long_example(LINE_CAP)]
    data = jsonl(rows) + jsonl([chat_example(i) for i in range(20, 25)])
    with pytest.raises(openai.BadRequestError) as err:
        live.client().files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert err.value.body["code"] == "line_too_long"  # type: ignore[index]
    assert err.value.body["param"] == "file"  # type: ignore[index]
    assert "Line 12" in err.value.message
    assert f"{LINE_CAP} bytes" in err.value.message
    assert "TUNESMITH_MAX_JSONL_LINE_BYTES" in err.value.message
    assert live.client().files.list().data == []
    assert stored_blobs(live) == []
    # The dry run says the same; a line just under the cap is read as any other.
    checked = live.http().post("/v1/files/validate", files={"file": ("t.jsonl", data)})
    assert checked.status_code == 400
    assert checked.json()["error"]["code"] == "line_too_long"
    fits = jsonl([chat_example(i) for i in range(11)] + [_long_example(LINE_CAP - 200)])
    assert max(len(line) for line in fits.splitlines()) <= LINE_CAP
    stored = live.client().files.create(file=("train.jsonl", fits), purpose="fine-tune")
    assert stored.status == "processed"


def test_reading_a_huge_line_holds_no_more_than_the_cap(tmp_path: Path) -> None:
    """A 64 MB line under a 1 MB cap: refused, and never held whole in memory."""
    import tracemalloc

    from tunesmith.data.jsonl import JsonlFormatError, iter_lines

    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"a": 1}\r\n{"b": "')
        for _ in range(64):
            handle.write(b"x" * (1 << 20))
        handle.write(b'"}\n{"c": 3}\n')
    cap = 1 << 20
    tracemalloc.start()
    try:
        seen = []
        with pytest.raises(JsonlFormatError) as err:
            for number, raw in iter_lines(path, max_line_bytes=cap):
                seen.append((number, raw))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == [(1, b'{"a": 1}')]
    assert (err.value.line, err.value.code) == (2, "line_too_long")
    assert peak < 8 * cap, f"{peak} bytes held at once"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_line_of_exactly_the_cap_is_read(tmp_path: Path, ending: bytes) -> None:
    from tunesmith.data.jsonl import JsonlFormatError, iter_lines

    cap = 1024
    path = tmp_path / "t.jsonl"
    exact = b'{"a": "' + b"x" * (cap - 9) + b'"}'
    assert len(exact) == cap
    path.write_bytes(exact + ending + exact + b"y" + ending)
    lines = iter_lines(path, max_line_bytes=cap)
    assert next(lines) == (1, exact)
    with pytest.raises(JsonlFormatError) as err:
        next(lines)
    assert err.value.line == 2
    path.write_bytes(exact)  # the last line, without a line ending
    assert list(iter_lines(path, max_line_bytes=cap)) == [(1, exact)]


# -- issue 15, finding 6: a multipart form is bounded in every part of it ---------------------

B = "tsboundary"
FILE_HEAD = (
    f'--{B}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    f'--{B}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
).encode()
CLOSE = f"\r\n--{B}--\r\n".encode()


def _many_fields() -> Iterator[bytes]:
    for i in range(10_000):
        yield f'--{B}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nvalue\r\n'.encode()
    yield FILE_HEAD + training_file() + CLOSE


def _long_header() -> Iterator[bytes]:
    yield f'--{B}\r\nContent-Disposition: form-data; name="purpose"; x="'.encode()
    for _ in range(100):
        yield b"h" * 10_000
    yield b'"\r\n\r\nfine-tune\r\n' + FILE_HEAD[len(FILE_HEAD) // 2 :]


def _many_headers() -> Iterator[bytes]:
    yield f"--{B}\r\n".encode()
    for i in range(1000):
        yield f"X-Header-{i}: {i}\r\n".encode()
    yield b'Content-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n' + CLOSE


def _two_files() -> Iterator[bytes]:
    yield FILE_HEAD + training_file()
    yield f'\r\n--{B}\r\nContent-Disposition: form-data; name="file"; filename="u"\r\n\r\n'.encode()
    yield training_file() + CLOSE


def _trailing_data() -> Iterator[bytes]:
    yield FILE_HEAD + training_file() + CLOSE
    for _ in range(1000):
        yield b"z" * 10_000


def _long_preamble() -> Iterator[bytes]:
    for _ in range(1000):
        yield b"\r\n" * 5_000
    yield FILE_HEAD + training_file() + CLOSE


def _unclosed() -> Iterator[bytes]:
    yield FILE_HEAD + training_file()


@pytest.mark.parametrize(
    ("body", "status", "code", "named"),
    [
        (_many_fields, 400, "too_many_form_fields", "16"),
        (_long_header, 400, "invalid_multipart", "4096 bytes"),
        (_many_headers, 400, "invalid_multipart", "8 headers"),
        (_two_files, 400, "duplicate_form_field", "'file'"),
        (_trailing_data, 400, "data_after_form", "closing boundary"),
        (_long_preamble, 413, "form_too_large", "262144 bytes"),
        (_unclosed, 400, "incomplete_form", "closing boundary"),
    ],
)
def test_a_chunked_form_is_bounded(
    live: LiveServer, body: object, status: int, code: str, named: str
) -> None:
    """Each attack is sent chunked (no Content-Length): the server refuses it in the envelope,
    stores nothing, and goes on serving."""
    http = live.http()
    response = http.post(
        "/v1/files",
        content=body(),  # type: ignore[operator]
        headers={"Content-Type": f"multipart/form-data; boundary={B}"},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert named in error["message"]
    assert stored_blobs(live) == []
    assert http.get("/v1/files").status_code == 200


def test_an_upload_part_form_is_bounded_too(client: openai.OpenAI, live: LiveServer) -> None:
    upload = client.uploads.create(
        bytes=100, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    head = f'--{B}\r\nContent-Disposition: form-data; name="data"; filename="p"\r\n\r\n'.encode()
    body = head + b"x" * 10 + f"\r\n--{B}\r\n".encode() + head[len(B) + 4 :] + b"y" * 10 + CLOSE
    response = live.http().post(
        f"/v1/uploads/{upload.id}/parts",
        content=iter([body]),
        headers={"Content-Type": f"multipart/form-data; boundary={B}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "data"
    assert response.json()["error"]["code"] == "duplicate_form_field"
    assert not live.app.state.runtime.blobs.part_dir(upload.id).exists()


# -- issue 15, finding 6: validation runs in its own bounded pool -------------------------------


@pytest.fixture
def one_file_worker_live(settings: Settings) -> Iterator[LiveServer]:
    tuned = settings.model_copy(update={"file_workers": 1})
    app = create_app(tuned)

    @app.post("/test/default-threads")
    async def shrink_default_threads(tokens: int) -> dict[str, int]:
        """Makes this server's default thread pool (the one authentication and the store use)
        small, so that a few validations would fill it if they ran there."""
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = tokens
        return {"tokens": tokens}

    yield from run_live(app, tuned)


def test_validations_leave_authentication_and_the_store_free(
    one_file_worker_live: LiveServer,
) -> None:
    import threading

    live = one_file_worker_live
    http = live.http()
    assert http.post("/test/default-threads", params={"tokens": 2}).status_code == 200
    data = training_file(12_000)  # about 2.4 MB: a validation of a second or more
    finished: list[float] = []
    sent = threading.Semaphore(0)

    def validate() -> None:
        def body() -> Iterator[bytes]:
            yield FILE_HEAD + data + CLOSE
            sent.release()

        with live.http() as own:
            response = own.post(
                "/v1/files/validate",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={B}"},
                timeout=300,
            )
        assert response.status_code == 200, response.text
        assert response.json()["n_examples"] == 12_000
        finished.append(time.monotonic())

    threads = [threading.Thread(target=validate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert sent.acquire(timeout=60)
    time.sleep(0.2)  # the bodies are in; their validations start
    listed = http.get("/v1/files", timeout=60)
    answered = time.monotonic()
    assert listed.status_code == 200
    for thread in threads:
        thread.join(timeout=300)
    assert len(finished) == 3
    # The listing did not wait for a validation to end: they queue in their own pool.
    assert answered < min(finished)
