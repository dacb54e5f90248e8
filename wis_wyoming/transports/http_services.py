"""What the HTTP routes serve with: the engines and settings `http_api` hands every route module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..engine.asr import AsrEngine
from ..engine.conversation import ConversationAgent
from ..engine.tts import TtsEngine
from ..errors import InvalidRequestError

if TYPE_CHECKING:  # http_rtc takes these services too
    from .http_rtc import RtcOptions

_Service = TypeVar("_Service")


@dataclass
class HttpServices:
    asr: AsrEngine
    tts: TtsEngine | None = None
    agent: ConversationAgent | None = None
    api_key: str | None = None
    max_audio_seconds: float = 120.0
    started: float = 0.0
    cors_origins: tuple[str, ...] = ()
    rtc: RtcOptions | None = None  # None: WebRTC's defaults


def enabled(service: _Service | None, what: str) -> _Service:
    """The service, or a 400 saying this server runs without it."""
    if service is None:
        raise InvalidRequestError(f"{what} is not enabled on this server")
    return service
