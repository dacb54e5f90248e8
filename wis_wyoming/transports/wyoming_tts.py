"""Wyoming text to speech on one connection: `synthesize`, and the streaming
`synthesize-start` / `synthesize-chunk`... / `synthesize-stop`.

`synthesize` is answered with `audio-start`, `audio-chunk`s and `audio-stop`. In a stream, each
sentence is spoken as soon as it is complete, while more text is still arriving (sentences are
synthesised by a task of their own, so reading the client's events never waits on Piper): one
`audio-start` before the first sentence, its chunks and those of each sentence that follows,
and at `synthesize-stop` the rest of the text, `audio-stop` and `synthesize-stopped`. Home
Assistant also sends the whole text as a `synthesize` inside the stream, for servers that do
not stream: it is not spoken twice. A failed stream gets one `error` event; the rest of its
text is dropped, and `synthesize-stop` is still answered with `synthesize-stopped`, so the
client does not wait for it forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from ..engine.speech_text import ReplySplitter, SpeechPart
from ..engine.tts import MAX_TEXT_CHARS, SpokenSentence, SynthesisOptions, TtsEngine
from ..engine.voices import Voice
from ..errors import InvalidRequestError, WisError

_LOGGER = logging.getLogger(__name__)

SAMPLES_PER_CHUNK = 1024
SAMPLE_WIDTH = 2
TTS_EVENTS = frozenset({"synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop"})

WriteEvent = Callable[[Event], Awaitable[None]]
SendError = Callable[[WisError], Awaitable[None]]


def options_of(data: dict) -> SynthesisOptions:
    """Wyoming's voice {name, language, speaker}, plus wis extensions in `data`: length_scale,
    noise_scale, noise_w_scale, sentence_silence, quick_start and cache (false: off)."""
    voice = data.get("voice") or {}
    if not isinstance(voice, dict):
        raise InvalidRequestError(f"'voice' must be an object, got {voice!r}")
    for key in ("name", "language", "speaker"):
        if voice.get(key) is not None and not isinstance(voice[key], str | int):
            raise InvalidRequestError(f"voice '{key}' must be a string, got {voice[key]!r}")
    numbers = {}
    for key in ("length_scale", "noise_scale", "noise_w_scale", "sentence_silence"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequestError(f"'{key}' must be a number, got {value!r}")
        if value is not None:
            numbers[key] = float(value)
    options = SynthesisOptions(
        voice=voice.get("name") or None,
        language=voice.get("language") or None,
        speaker=None if voice.get("speaker") in (None, "") else str(voice["speaker"]),
        use_cache=data.get("cache", True) is not False,
        quick_start=data.get("quick_start", True) is not False,
        **numbers,
    )
    options.validate()
    return options


@dataclass
class _Stream:
    options: SynthesisOptions
    splitter: ReplySplitter
    parts: asyncio.Queue[SpeechPart | None] = field(default_factory=asyncio.Queue)
    speaker: asyncio.Task | None = None
    failed: bool = False
    chars: int = 0  # text received so far

    @staticmethod
    def of(options: SynthesisOptions, failed: bool = False) -> _Stream:
        return _Stream(options, ReplySplitter(options.quick_start), failed=failed)


class TtsSession:
    """The synthesis events of one connection."""

    def __init__(self, engine: TtsEngine, write_event: WriteEvent, send_error: SendError) -> None:
        self.engine = engine
        self._write = write_event
        self._send_error = send_error
        self._stream: _Stream | None = None

    async def handle(self, event: Event) -> None:
        if SynthesizeStart.is_type(event.type):
            await self._on_start(event)
        elif SynthesizeChunk.is_type(event.type):
            self._on_chunk(event)
        elif SynthesizeStop.is_type(event.type):
            await self._on_stop()
        elif Synthesize.is_type(event.type):
            if self._stream is not None:
                return  # the compatibility copy of the streamed text
            await self._speak_whole(event)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and stream.speaker is not None:
            stream.speaker.cancel()
            await asyncio.gather(stream.speaker, return_exceptions=True)

    async def _speak_whole(self, event: Event) -> None:
        text = event.data.get("text")
        if not isinstance(text, str):
            raise InvalidRequestError("synthesize needs a 'text' string")
        options = options_of(event.data)
        started = False
        async for sentence in self.engine.stream(text, options):
            if not started:
                await self._start(sentence.rate)
                started = True
            await self._send_audio(sentence)
        if not started:  # nothing to say: an empty, well-formed answer
            await self._start(self.engine.voice(options).sample_rate)
        await self._write(AudioStop().event())

    async def _on_start(self, event: Event) -> None:
        await self.close()  # a new stream replaces one the client never stopped
        try:
            self._stream = _Stream.of(options_of(event.data))
            voice = self.engine.voice(self._stream.options)
        except WisError:
            self._stream = _Stream.of(SynthesisOptions(), failed=True)
            raise
        self._stream.speaker = asyncio.create_task(self._speak_stream(self._stream, voice))

    def _on_chunk(self, event: Event) -> None:
        stream = self._stream
        if stream is None:
            raise InvalidRequestError("synthesize-chunk arrived before synthesize-start")
        text = event.data.get("text")
        if not isinstance(text, str):
            raise InvalidRequestError("synthesize-chunk needs a 'text' string")
        stream.chars += len(text)
        if stream.chars > MAX_TEXT_CHARS and not stream.failed:
            stream.failed = True  # what was spoken stays spoken; the rest is dropped
            raise InvalidRequestError(f"streamed text is longer than {MAX_TEXT_CHARS} characters")
        if not stream.failed:
            for part in stream.splitter.push(text):
                stream.parts.put_nowait(part)

    async def _on_stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            raise InvalidRequestError("synthesize-stop arrived without synthesize-start")
        if stream.speaker is not None:
            for part in stream.splitter.flush():
                stream.parts.put_nowait(part)
            stream.parts.put_nowait(None)
            await stream.speaker
        await self._write(SynthesizeStopped().event())

    async def _speak_stream(self, stream: _Stream, voice: Voice) -> None:
        """Speak each part as it is known, in order; audio-stop after the last."""
        first = True
        try:
            while (part := await stream.parts.get()) is not None:
                if stream.failed:
                    continue
                async for spoken in self.engine.stream_part(part, stream.options, voice):
                    if first:
                        await self._start(spoken.rate)
                        first = False
                    await self._send_audio(spoken)
        except WisError as err:
            stream.failed = True
            await self._send_error(err)
        except ConnectionError:
            stream.failed = True
            return
        except Exception as err:  # a bug costs this stream, not the connection
            _LOGGER.exception("Internal error while speaking a stream")
            stream.failed = True
            await self._send_error(WisError(f"internal error: {err}"))
        if not stream.failed:
            if first:
                await self._start(voice.sample_rate)
            await self._write(AudioStop().event())

    async def _start(self, rate: int) -> None:
        await self._write(AudioStart(rate=rate, width=SAMPLE_WIDTH, channels=1).event())

    async def _send_audio(self, sentence: SpokenSentence) -> None:
        step = SAMPLES_PER_CHUNK * SAMPLE_WIDTH
        for offset in range(0, len(sentence.pcm), step):
            chunk = AudioChunk(sentence.rate, SAMPLE_WIDTH, 1, sentence.pcm[offset : offset + step])
            await self._write(chunk.event())


def is_tts_event(event_type: str) -> bool:
    return event_type in TTS_EVENTS


async def close_quietly(session: TtsSession | None) -> None:
    if session is not None:
        with contextlib.suppress(Exception):
            await session.close()
