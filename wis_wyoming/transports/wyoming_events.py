"""Reading Wyoming events defensively.

The wyoming library's reader returns None (a silent disconnect) on bad JSON and trusts any
`payload_length` it is sent. A server shared by many satellites must instead tell the client
what was wrong and must not allocate whatever a header asks for.
"""

from __future__ import annotations

import asyncio
import json

from wyoming.event import Event

from ..errors import InvalidRequestError

MAX_DATA_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 16 << 20


class ProtocolError(InvalidRequestError):
    """The byte stream cannot be parsed as Wyoming events; the connection cannot continue."""

    code = "malformed-event"


def _length(header: dict, key: str, limit: int) -> int:
    value = header.get(key) or 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} must be a non-negative integer, got {value!r}")
    if value > limit:
        raise ProtocolError(f"{key} of {value} bytes exceeds the limit of {limit} bytes")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, None at end of stream, or ProtocolError for bytes that are not an event."""
    try:
        line = await reader.readline()
    except ValueError as err:  # the stream's line limit (64 KiB) was exceeded
        raise ProtocolError("event header line is too long") from err
    if not line:
        return None
    try:
        header = json.loads(line)
    except ValueError as err:
        raise ProtocolError("event header is not valid JSON") from err
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("event header must be a JSON object with a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("event 'data' must be a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    try:
        if data_length:
            extra = json.loads(await reader.readexactly(data_length))
            if not isinstance(extra, dict):
                raise ProtocolError("event data block must be a JSON object")
            data.update(extra)
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None  # the peer went away in the middle of an event
    except ValueError as err:
        raise ProtocolError("event data block is not valid JSON") from err
    return Event(type=header["type"], data=data, payload=payload)
