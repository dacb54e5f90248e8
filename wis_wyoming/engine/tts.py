"""Text to speech with Piper: sentence by sentence, off the event loop, through the disk cache.

Speech comes out one sentence at a time, so the first sentence plays while the next is being
synthesised, and text that arrives in pieces (an LLM's reply) is spoken as each sentence
completes (`SentenceSplitter`). Within a sentence, `stream` gives audio decoder chunk by
decoder chunk (`piper_stream`), so it starts before the sentence's audio is all made. Every
chunk is one job on the TTS worker thread, so several clients take turns instead of one long
reply holding up the rest. Each sentence but the first is preceded by `sentence_silence`. The
first sentence of a reply is spoken as its first phrase, then the rest (`quick_start`): the
prelude's time grows with the length of the text, so the first audio comes sooner, and in a
stream before the sentence is complete. Whole and streamed text are cut into the same parts
(`ReplySplitter`), so both give the same audio.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidRequestError, WisError
from .hardware import ComputePlan
from .piper_stream import Latent, SplitPiper, chunk_bounds
from .speech_text import ReplySplitter, SpeechPart, spoken
from .tts_cache import CachedAudio, TtsCache, cache_key
from .voices import Voice, VoiceCatalogue

_LOGGER = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000
MAX_RESIDENT_VOICES = 4
RENDER = 2  # how audio is made (piper_stream): a change invalidates cached audio


class SynthesisError(WisError):
    code = "synthesis-failed"


@dataclass(frozen=True)
class SynthesisOptions:
    voice: str | None = None
    language: str | None = None  # picks a voice when none is named
    speaker: str | None = None  # name or number, for multi-speaker voices
    length_scale: float | None = None  # > 1 speaks slower; None: the voice's own
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    sentence_silence: float = 0.2  # seconds before each sentence but the first
    quick_start: bool = True  # the first sentence in two parts: first audio sooner
    use_cache: bool = True

    def validate(self) -> None:
        for name in ("length_scale", "noise_scale", "noise_w_scale"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0.0 <= value <= 5.0):
                raise InvalidRequestError(f"{name} must be a number from 0 to 5, got {value!r}")
        if not isinstance(self.sentence_silence, int | float) or not 0.0 <= self.sentence_silence <= 5.0:
            raise InvalidRequestError(
                f"sentence_silence must be from 0 to 5 seconds, got {self.sentence_silence!r}"
            )


@dataclass(frozen=True)
class SpokenSentence:
    text: str
    rate: int
    pcm: bytes  # 16-bit mono, silence before it included
    cached: bool
    seconds: float  # time spent making it (reading the cache, or synthesising)


@dataclass(frozen=True)
class TtsDefaults:
    voice: str | None = None
    max_resident_voices: int = MAX_RESIDENT_VOICES


class TtsEngine:
    def __init__(
        self,
        catalogue: VoiceCatalogue,
        plan: ComputePlan,
        cache: TtsCache | None = None,
        defaults: TtsDefaults | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.plan = plan
        self.cache = cache
        self.defaults = defaults or TtsDefaults()
        self._loaded: OrderedDict[str, tuple[str, SplitPiper]] = OrderedDict()  # name -> (revision, voice)
        self._load_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wis-tts")

    def voice(self, options: SynthesisOptions) -> Voice:
        """The voice a request gets, or a clear error (checked before any audio is made)."""
        options.validate()
        voice = self.catalogue.get(options.voice or self.defaults.voice, options.language)
        voice.speaker_id(options.speaker)
        return voice

    async def preload(self, name: str | None = None) -> Voice:
        voice = self.voice(SynthesisOptions(voice=name))
        await asyncio.get_running_loop().run_in_executor(self._worker, self._piper, voice)
        return voice

    async def speak(self, text: str, options: SynthesisOptions) -> AsyncIterator[SpokenSentence]:
        """The text's audio, part by part (see `ReplySplitter`)."""
        voice, parts = self._parts(text, options)
        for part in parts:
            yield await self.speak_part(part, options, voice)

    async def stream(self, text: str, options: SynthesisOptions) -> AsyncIterator[SpokenSentence]:
        """The text's audio in pieces, each as soon as it is made (see `stream_part`)."""
        voice, parts = self._parts(text, options)
        for part in parts:
            async for piece in self.stream_part(part, options, voice):
                yield piece

    async def speak_part(
        self, part: SpeechPart, options: SynthesisOptions, voice: Voice | None = None
    ) -> SpokenSentence:
        """One part's whole audio."""
        pieces = [piece async for piece in self.stream_part(part, options, voice)]
        first = pieces[0]
        pcm = b"".join(piece.pcm for piece in pieces)
        return SpokenSentence(part.text, first.rate, pcm, first.cached, sum(p.seconds for p in pieces))

    async def stream_part(
        self, part: SpeechPart, options: SynthesisOptions, voice: Voice | None = None
    ) -> AsyncIterator[SpokenSentence]:
        """One part's audio in pieces: from the cache whole, or decoded chunk by chunk (and cached).

        There is always at least one piece, the first carrying the silence before the part.
        """
        voice = voice or self.voice(options)
        key = self._key(part.text, voice, options)
        started = time.perf_counter()
        cached = self.cache.get(key) if self.cache is not None and options.use_cache else None
        if cached is not None:
            pieces = _whole(cached.pcm)
        else:
            pieces = self._synthesise(part.text, voice, options, key, part.opens)
        first = True
        async for pcm, last in pieces:
            if last and part.phrase:  # joined to the rest of its sentence like a comma's pause
                pcm = _trim_trailing_silence(pcm, voice.sample_rate)
            if first and part.pause_before and options.sentence_silence > 0:
                pcm = bytes(2 * round(options.sentence_silence * voice.sample_rate)) + pcm
            first = False
            now = time.perf_counter()
            yield SpokenSentence(part.text, voice.sample_rate, pcm, cached is not None, now - started)
            started = time.perf_counter()

    async def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _parts(self, text: str, options: SynthesisOptions) -> tuple[Voice, list[SpeechPart]]:
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidRequestError(f"text is longer than {MAX_TEXT_CHARS} characters")
        voice = self.voice(options)
        splitter = ReplySplitter(options.quick_start)
        return voice, [*splitter.push(text), *splitter.flush()]

    def _key(self, sentence: str, voice: Voice, options: SynthesisOptions) -> str:
        return cache_key(
            {
                "text": sentence,
                "voice": voice.name,
                "revision": voice.revision,
                "speaker": voice.speaker_id(options.speaker),
                "length_scale": options.length_scale,
                "noise_scale": options.noise_scale,
                "noise_w_scale": options.noise_w_scale,
                "render": RENDER,
            }
        )

    async def _synthesise(
        self, text: str, voice: Voice, options: SynthesisOptions, key: str, opens: bool
    ) -> AsyncIterator[tuple[bytes, bool]]:
        """(samples, last) chunk by chunk, each a job on the worker; all of it cached at the end.

        Only a reply's opening part is decoded in small chunks: later parts are made while
        earlier audio plays, and decoding them whole costs less (no overlap between chunks).
        """
        loop = asyncio.get_running_loop()
        # One loaded voice for the whole part: its decoder must be the prelude's.
        piper = await loop.run_in_executor(self._worker, self._piper, voice)
        latents = await loop.run_in_executor(self._worker, self._latents, piper, text, voice, options)
        made: list[bytes] = []
        if not latents:
            yield b"", True
        for index, latent in enumerate(latents):
            bounds = chunk_bounds(latent.frames) if opens else [(0, latent.frames)]
            for number, (start, end) in enumerate(bounds):
                pcm = await loop.run_in_executor(self._worker, self._decode, piper, voice, latent, start, end)
                made.append(pcm)
                yield pcm, index == len(latents) - 1 and number == len(bounds) - 1
        if self.cache is not None:
            audio = CachedAudio(voice.sample_rate, b"".join(made))
            await loop.run_in_executor(self._worker, self.cache.put, key, audio)

    # --- on the worker thread --------------------------------------------------------------------

    def _latents(self, piper: SplitPiper, text: str, voice: Voice, options: SynthesisOptions) -> list[Latent]:
        try:
            return piper.latents(
                spoken(text, voice.languages[0]),
                voice.speaker_id(options.speaker),
                options.length_scale,
                options.noise_scale,
                options.noise_w_scale,
            )
        except Exception as err:  # espeak or onnxruntime: one sentence fails, not the server
            _LOGGER.exception("Piper failed on %r with voice %s", text, voice.name)
            raise SynthesisError(f"voice {voice.name} could not speak the text: {err}") from err

    def _decode(self, piper: SplitPiper, voice: Voice, latent: Latent, start: int, end: int) -> bytes:
        try:
            return piper.decode(latent, start, end)
        except Exception as err:
            _LOGGER.exception("Piper's decoder failed with voice %s", voice.name)
            raise SynthesisError(f"voice {voice.name} could not speak the text: {err}") from err

    def _piper(self, voice: Voice) -> SplitPiper:
        """The loaded Piper voice, loading it (and unloading the least recently used) if needed."""
        with self._load_lock:
            loaded = self._loaded.get(voice.name)
            if loaded is not None and loaded[0] == voice.revision:
                self._loaded.move_to_end(voice.name)
                return loaded[1]
            started = time.perf_counter()
            try:
                piper = SplitPiper(voice.model_path, voice.config, self.plan)
            except Exception as err:
                raise SynthesisError(f"voice {voice.name} cannot be loaded: {err}") from err
            self._loaded[voice.name] = (voice.revision, piper)
            self._loaded.move_to_end(voice.name)
            while len(self._loaded) > self.defaults.max_resident_voices:
                self._loaded.popitem(last=False)
            _LOGGER.info("Loaded voice %s in %.2f s", voice.name, time.perf_counter() - started)
            return piper


def _trim_trailing_silence(pcm: bytes, rate: int, keep: float = 0.04, threshold: int = 600) -> bytes:
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if not len(loud):
        return pcm
    end = min(len(samples), int(loud[-1]) + 1 + round(keep * rate))
    return samples[:end].tobytes()


async def _whole(pcm: bytes) -> AsyncIterator[tuple[bytes, bool]]:
    yield pcm, True
