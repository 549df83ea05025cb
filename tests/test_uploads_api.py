"""The Uploads API: parts, completion into a normal file, cancellation, limits."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import LiveServer, run_live
from tests.helpers import chat_example, jsonl, training_file
from tunesmith.api.app import create_app
from tunesmith.settings import Settings


def test_round_trip_yields_a_validated_file(client: openai.OpenAI, live: LiveServer) -> None:
    data = training_file(40)
    upload = client.uploads.create(
        bytes=len(data), filename="big.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    assert upload.id.startswith("upload_")
    assert upload.status == "pending"
    assert upload.expires_at == upload.created_at + 3600
    thirds = [data[: len(data) // 3], data[len(data) // 3 : 2 * len(data) // 3]]
    thirds.append(data[2 * len(data) // 3 :])
    parts = [client.uploads.parts.create(upload_id=upload.id, data=chunk) for chunk in thirds]
    assert all(p.upload_id == upload.id and p.id.startswith("part_") for p in parts)
    # Parts may arrive in any order; the order given at completion is the file's order.
    done = client.uploads.complete(upload_id=upload.id, part_ids=[p.id for p in parts])
    assert done.status == "completed"
    assert done.file is not None
    assert done.file.bytes == len(data)
    assert done.file.status == "processed"
    assert client.files.content(done.file.id).read() == data
    report = live.http().get(f"/v1/files/{done.file.id}/validation").json()
    assert report["n_examples"] == 40
    assert not live.app.state.runtime.blobs.part_dir(upload.id).exists()
    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(upload_id=upload.id, data=b"more")


def test_completion_checks_the_byte_count_and_part_ids(client: openai.OpenAI) -> None:
    data = training_file(12)
    upload = client.uploads.create(
        bytes=len(data) + 1, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    part = client.uploads.parts.create(upload_id=upload.id, data=data)
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])
    assert "bytes" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id, "part_unknown"])
    assert "part_unknown" in err.value.message
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id, part.id])
    assert client.files.list().data == []


def test_assembled_bad_jsonl_is_refused_and_stays_pending(client: openai.OpenAI) -> None:
    data = jsonl([chat_example(i) for i in range(11)]) + b"{broken\n"
    upload = client.uploads.create(
        bytes=len(data), filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    part = client.uploads.parts.create(upload_id=upload.id, data=data)
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])
    assert "Line 12" in err.value.message
    assert client.files.list().data == []


def test_cancel(client: openai.OpenAI, live: LiveServer) -> None:
    upload = client.uploads.create(
        bytes=10, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    client.uploads.parts.create(upload_id=upload.id, data=b"0123456789")
    cancelled = client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.uploads.complete(upload_id=upload.id, part_ids=["part_x"])
    from tunesmith.housekeeping import sweep

    runtime = live.app.state.runtime
    sweep(runtime.sessions, runtime.blobs, now=cancelled.created_at)
    assert not runtime.blobs.part_dir(upload.id).exists()


def test_part_over_the_limit_answers_413(client: openai.OpenAI, live: LiveServer) -> None:
    size = live.settings.max_part_bytes + 1
    upload = client.uploads.create(
        bytes=size, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    with pytest.raises(openai.APIStatusError) as err:
        client.uploads.parts.create(upload_id=upload.id, data=b"x" * size)
    assert err.value.status_code == 413
    assert not live.app.state.runtime.blobs.part_dir(upload.id).exists()
    assert list((live.settings.blob_dir() / "tmp").iterdir()) == []


def test_expired_upload_takes_no_parts(client: openai.OpenAI, live: LiveServer) -> None:
    from tunesmith.housekeeping import sweep

    upload = client.uploads.create(
        bytes=10, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    runtime = live.app.state.runtime
    swept = sweep(runtime.sessions, runtime.blobs, now=upload.expires_at)
    assert swept.uploads == [upload.id]
    with pytest.raises(openai.ConflictError) as err:
        client.uploads.parts.create(upload_id=upload.id, data=b"0123456789")
    assert "expired" in err.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"filename": "t.jsonl", "purpose": "fine-tune", "bytes": 0, "mime_type": "x"}, "bytes"),
        ({"filename": "t.txt", "purpose": "fine-tune", "bytes": 5, "mime_type": "x"}, "file"),
        ({"filename": "t.jsonl", "purpose": "nope", "bytes": 5, "mime_type": "x"}, "purpose"),
        ({"filename": "t.jsonl", "purpose": "fine-tune", "mime_type": "x"}, "bytes"),
    ],
)
def test_bad_upload_requests(live: LiveServer, body: dict[str, object], param: str) -> None:
    response = live.http().post("/v1/uploads", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_uploads_are_project_scoped(live: LiveServer, client: openai.OpenAI) -> None:
    from tests.test_auth import make_key, make_project

    upload = client.uploads.create(
        bytes=10, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    other = live.client(make_key(live, make_project(live, "other"), "owner"))
    with pytest.raises(openai.NotFoundError):
        other.uploads.parts.create(upload_id=upload.id, data=b"0123456789")
    with pytest.raises(openai.NotFoundError):
        other.uploads.cancel(upload.id)


def test_a_response_is_sent_only_after_its_transaction_commits(
    client: openai.OpenAI, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from sqlalchemy.orm import Session

    from tunesmith.store.tables import UploadRow

    commit = Session.commit

    def slow_commit(self: Session) -> None:
        time.sleep(0.3)  # widen the window in which a reader could see nothing
        commit(self)

    monkeypatch.setattr(Session, "commit", slow_commit)
    upload = client.uploads.create(
        bytes=10, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    with live.app.state.runtime.sessions() as session:
        assert session.get(UploadRow, upload.id) is not None


# -- issue 15, finding 6: parts are bounded by the declared size and in number -----------------


def _stored_parts(live: LiveServer, upload_id: str) -> tuple[list[int], list[str]]:
    """The parts' sizes as the database records them, and the part files on disk."""
    from sqlalchemy import select

    from tunesmith.store.tables import UploadPartRow

    runtime = live.app.state.runtime
    with runtime.sessions() as session:
        sizes = sorted(
            session.scalars(select(UploadPartRow.bytes).where(UploadPartRow.upload_id == upload_id))
        )
    folder = runtime.blobs.part_dir(upload_id)
    return sizes, sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_part_beyond_the_declared_bytes_is_refused_and_nothing_stored(
    client: openai.OpenAI, live: LiveServer
) -> None:
    upload = client.uploads.create(
        bytes=10, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.parts.create(upload_id=upload.id, data=b"x" * 11)
    assert err.value.body["param"] == "data"  # type: ignore[index]
    assert "10 bytes" in err.value.message
    assert _stored_parts(live, upload.id) == ([], [])

    client.uploads.parts.create(upload_id=upload.id, data=b"x" * 6)
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.parts.create(upload_id=upload.id, data=b"x" * 5)
    assert err.value.body["param"] == "data"  # type: ignore[index]
    assert err.value.body["code"] == "upload_bytes_exceeded"  # type: ignore[index]
    client.uploads.parts.create(upload_id=upload.id, data=b"x" * 4)
    with pytest.raises(openai.BadRequestError) as err:  # full: not even one byte more
        client.uploads.parts.create(upload_id=upload.id, data=b"x")
    assert err.value.body["code"] == "upload_bytes_exceeded"  # type: ignore[index]
    sizes, names = _stored_parts(live, upload.id)
    assert sizes == [4, 6] and len(names) == 2
    assert list((live.settings.blob_dir() / "tmp").iterdir()) == []


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_live(request: pytest.FixtureRequest, settings: Settings) -> Iterator[LiveServer]:
    """A live server on SQLite, then on PostgreSQL: the upload's row lock is each one's own."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        settings = settings.model_copy(update={"database_url": url})
    yield from run_live(create_app(settings), settings)


def test_parallel_parts_cannot_together_pass_the_declared_bytes(any_db_live: LiveServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    live = any_db_live
    client = live.client()

    upload = client.uploads.create(
        bytes=10, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )

    def send(_: int) -> int:
        try:
            live.client().uploads.parts.create(upload_id=upload.id, data=b"y" * 5)
        except openai.BadRequestError as exc:
            assert exc.body["code"] == "upload_bytes_exceeded"  # type: ignore[index]
            return 400
        return 200

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = sorted(pool.map(send, range(6)))
    assert answers == [200, 200, 400, 400, 400, 400]
    sizes, names = _stored_parts(live, upload.id)
    assert sizes == [5, 5] and len(names) == 2


@pytest.fixture
def three_parts_live(settings: Settings) -> Iterator[LiveServer]:
    capped = settings.model_copy(update={"max_upload_parts": 3})
    yield from run_live(create_app(capped), capped)


def test_the_number_of_parts_is_capped(three_parts_live: LiveServer) -> None:
    client = three_parts_live.client()
    data = training_file(12)
    upload = client.uploads.create(
        bytes=len(data), filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    parts = [client.uploads.parts.create(upload_id=upload.id, data=data[:3]) for _ in range(3)]
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.parts.create(upload_id=upload.id, data=data[3:])
    assert err.value.body["param"] == "data"  # type: ignore[index]
    assert err.value.body["code"] == "too_many_parts"  # type: ignore[index]
    assert "TUNESMITH_MAX_UPLOAD_PARTS" in err.value.message
    sizes, _ = _stored_parts(three_parts_live, upload.id)
    assert sizes == [3, 3, 3]
    # Cancelling still works, and the parts go.
    client.uploads.cancel(upload.id)
    assert len(parts) == 3


def test_two_completions_at_once_make_one_file(any_db_live: LiveServer) -> None:
    """Assembly runs with no transaction open; the upload's row, locked to store the result,
    lets only one completion through."""
    from concurrent.futures import ThreadPoolExecutor

    live = any_db_live
    client = live.client()

    data = training_file(2000)
    upload = client.uploads.create(
        bytes=len(data), filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    half = len(data) // 2
    parts = [
        client.uploads.parts.create(upload_id=upload.id, data=chunk).id
        for chunk in (data[:half], data[half:])
    ]

    def complete(_: int) -> int:
        try:
            live.client().uploads.complete(upload_id=upload.id, part_ids=parts)
        except openai.ConflictError:
            return 409
        return 200

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = sorted(pool.map(complete, range(3)))
    assert answers == [200, 409, 409]
    (stored,) = client.files.list().data
    assert client.files.content(stored.id).read() == data
    assert list((live.settings.blob_dir() / "tmp").iterdir()) == []
