"""Streaming ``multipart/form-data``: the file part goes straight to a temporary file in chunks,
so an upload is never held in memory and an oversized one is cut off as soon as it passes the
limit. Starlette's own form parser would spool the whole body before the route runs.
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
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise _too_large(limit_name, max_bytes)

    form = ReceivedForm()
    state = _State()

    def on_part_begin() -> None:
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
            form.file_field = file_field
            form.filename = state.filename

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.name == file_field:
            form.size += end - start
            if form.size > max_bytes:
                raise _too_large(limit_name, max_bytes)
            state.pending.append(data[start:end])
            state.pending_bytes += end - start
        else:
            state.value += data[start:end]
            if len(state.value) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"Form field {state.name!r} is too long.", param=state.name)

    def on_part_end() -> None:
        if state.name != file_field:
            form.fields[state.name] = state.value.decode("utf-8", "replace")

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
        },
    )

    async def flush() -> None:
        if state.pending:
            chunk = b"".join(state.pending)
            state.pending.clear()
            state.pending_bytes = 0
            await anyio.to_thread.run_sync(sink.write, chunk)

    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if state.pending_bytes >= FLUSH_BYTES:
                await flush()
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest(
            f"The multipart/form-data body is malformed ({exc}); send the form as an HTTP "
            "client builds it.",
            param=file_field,
        ) from None
    await flush()
    await anyio.to_thread.run_sync(sink.flush)
    if form.file_field is None:
        raise InvalidRequest(f"The {file_field!r} part is missing from the form.", param=file_field)
    return form


def _too_large(limit_name: str, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is larger than the limit of {max_bytes} bytes ({limit_name}). "
        "Use the Uploads API for large files, or split the data.",
        param="file",
        code="file_too_large",
    )
