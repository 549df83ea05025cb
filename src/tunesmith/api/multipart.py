"""Streaming ``multipart/form-data``: the file part goes straight to a temporary file in chunks,
so an upload is never held in memory and an oversized one is cut off as soon as it passes the
limit. Starlette's own form parser would spool the whole body before the route runs.

Everything else in the form is bounded too, whether the body declares its length or arrives
chunked: at most :data:`MAX_FORM_PARTS` parts, one file part, each part at most
:data:`MAX_PART_HEADERS` headers of at most :data:`MAX_HEADER_BYTES`, a plain field at most
:data:`MAX_FIELD_BYTES`, and everything but the file's bytes (preamble, headers, fields,
boundaries) at most :data:`MAX_FORM_OVERHEAD_BYTES`. The form must end with its closing boundary,
and little may follow it (:data:`MAX_EPILOGUE_BYTES`). Each refusal is a 400 (413 for size) that
names the limit, and stops the read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

import anyio
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from tunesmith.errors import InvalidRequest, PayloadTooLarge

FLUSH_BYTES = 1 << 20  # buffered bytes handed to a worker thread per write
MAX_FIELD_BYTES = 64 << 10  # a plain form field is never larger than this
MAX_FORM_PARTS = 16  # parts of one form, the file included (a file upload uses 2 to 4)
MAX_PART_HEADERS = 8  # headers of one part
MAX_HEADER_BYTES = 4096  # one header line of a part
MAX_FORM_OVERHEAD_BYTES = 256 << 10  # all of the body but the file's own bytes
MAX_EPILOGUE_BYTES = 1024  # what may follow the closing boundary, past the chunk that holds it


@dataclass(slots=True)
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_field: str | None = None
    size: int = 0


@dataclass(slots=True)
class _State:
    name: str = ""
    filename: str | None = None
    header_field: bytes = b""
    header_value: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    value: bytearray = field(default_factory=bytearray)
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    parts: int = 0
    ended: bool = False


async def receive_form(
    request: Request, *, file_field: str, sink: BinaryIO, max_bytes: int, limit_name: str
) -> ReceivedForm:
    """Reads a multipart body; the part named ``file_field`` is written to ``sink``.

    Raises :class:`PayloadTooLarge` as soon as that part passes ``max_bytes``."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Send the file as multipart/form-data with a boundary.", param=file_field
        )
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > max_bytes + MAX_FORM_OVERHEAD_BYTES
    ):
        raise _too_large(limit_name, max_bytes, file_field)

    form = ReceivedForm()
    state = _State()

    def on_part_begin() -> None:
        state.parts += 1
        if state.parts > MAX_FORM_PARTS:
            raise InvalidRequest(
                f"The form has more than {MAX_FORM_PARTS} parts, the most one may have; send "
                "only the fields the endpoint takes.",
                code="too_many_form_fields",
            )
        state.headers = {}
        state.value = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.lower()] = state.header_value
        state.header_field, state.header_value = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(state.headers.get(b"content-disposition", b""))
        state.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        state.filename = raw_filename.decode("utf-8", "replace") if raw_filename else None
        if state.name == file_field:
            if form.file_field is not None:
                raise InvalidRequest(
                    f"The form has more than one {file_field!r} part; send one file per request.",
                    param=file_field,
                    code="duplicate_form_field",
                )
            form.file_field = file_field
            form.filename = state.filename

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.name == file_field:
            form.size += end - start
            if form.size > max_bytes:
                raise _too_large(limit_name, max_bytes, file_field)
            state.pending.append(data[start:end])
            state.pending_bytes += end - start
        else:
            state.value += data[start:end]
            if len(state.value) > MAX_FIELD_BYTES:
                raise InvalidRequest(
                    f"Form field {state.name!r} is longer than {MAX_FIELD_BYTES} bytes.",
                    param=state.name,
                    code="form_field_too_long",
                )

    def on_part_end() -> None:
        if state.name != file_field:
            form.fields[state.name] = state.value.decode("utf-8", "replace")

    def on_end() -> None:
        state.ended = True

    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
                "on_end": on_end,
            },
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_HEADER_BYTES,
        )
    except Exception:  # a boundary the parser refuses (too long)
        raise _malformed("its boundary is not usable", file_field) from None

    async def flush() -> None:
        if state.pending:
            chunk = b"".join(state.pending)
            state.pending.clear()
            state.pending_bytes = 0
            await anyio.to_thread.run_sync(sink.write, chunk)

    received = 0
    epilogue = 0
    async for chunk in request.stream():
        if state.ended:  # the parser discards what follows the close; it may not go on
            epilogue += len(chunk)
            if epilogue > MAX_EPILOGUE_BYTES:
                raise InvalidRequest(
                    f"The form goes on after its closing boundary (more than "
                    f"{MAX_EPILOGUE_BYTES} bytes follow it); end the body there.",
                    code="data_after_form",
                )
            continue
        received += len(chunk)
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise _malformed(str(exc), file_field) from None
        if received - form.size > MAX_FORM_OVERHEAD_BYTES:
            raise PayloadTooLarge(
                f"The form's fields, headers and boundaries take more than "
                f"{MAX_FORM_OVERHEAD_BYTES} bytes besides the file; send only the fields the "
                "endpoint takes.",
                code="form_too_large",
            )
        if state.pending_bytes >= FLUSH_BYTES:
            await flush()
    try:
        parser.finalize()
    except MultipartParseError as exc:
        raise _malformed(str(exc), file_field) from None
    if not state.ended:
        raise InvalidRequest(
            "The form ended before its closing boundary; the body was cut short. Send it again.",
            param=file_field,
            code="incomplete_form",
        )
    await flush()
    await anyio.to_thread.run_sync(sink.flush)
    if form.file_field is None:
        raise InvalidRequest(f"The {file_field!r} part is missing from the form.", param=file_field)
    return form


def _malformed(problem: str, file_field: str) -> InvalidRequest:
    return InvalidRequest(
        f"The body is not valid multipart/form-data ({problem}). Each part may have at most "
        f"{MAX_PART_HEADERS} headers of at most {MAX_HEADER_BYTES} bytes each.",
        param=file_field,
        code="invalid_multipart",
    )


def _too_large(limit_name: str, max_bytes: int, file_field: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is larger than the limit of {max_bytes} bytes ({limit_name}). "
        "Use the Uploads API for large files, or split the data.",
        param=file_field,
        code="file_too_large",
    )
