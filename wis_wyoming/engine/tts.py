"""Text to speech with Piper: sentence by sentence, off the event loop, through the disk cache.

Speech comes out one sentence at a time, so the first sentence plays while the next is being
synthesised, and text that arrives in pieces (an LLM's reply) is spoken as each sentence
completes (`SentenceSplitter`). Every sentence is one job on the TTS worker thread, so several
clients take turns sentence by sentence instead of one long reply holding up the rest. Each
sentence but the first is preceded by `sentence_silence`. The first sentence of a reply is
spoken as its first phrase, then the rest (`quick_start`): Piper's time grows with the length
of the text, so the first audio comes sooner, and in a stream before the sentence is complete.
Whole and streamed text are cut into the same parts (`ReplySplitter`), so both give the same
audio.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidRequestError, WisError
from .hardware import ComputePlan
from .speech_text import ReplySplitter, SpeechPart, spoken
from .tts_cache import CachedAudio, TtsCache, cache_key
from .voices import Voice, VoiceCatalogue

_LOGGER = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000
MAX_RESIDENT_VOICES = 4


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
        self._loaded: OrderedDict[str, tuple[str, object]] = OrderedDict()  # name -> (revision, voice)
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
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidRequestError(f"text is longer than {MAX_TEXT_CHARS} characters")
        voice = self.voice(options)
        splitter = ReplySplitter(options.quick_start)
        for part in [*splitter.push(text), *splitter.flush()]:
            yield await self.speak_part(part, options, voice)

    async def speak_part(
        self, part: SpeechPart, options: SynthesisOptions, voice: Voice | None = None
    ) -> SpokenSentence:
        """One part's audio: from the cache, or synthesised on the worker (and cached)."""
        voice = voice or self.voice(options)
        started = time.perf_counter()
        key = self._key(part.text, voice, options)
        cached = self.cache.get(key) if self.cache is not None and options.use_cache else None
        if cached is not None:
            pcm = cached.pcm
        else:
            loop = asyncio.get_running_loop()
            pcm = await loop.run_in_executor(self._worker, self._synthesise, part.text, voice, options, key)
        if part.phrase:  # joined to the rest of its sentence like a comma's pause
            pcm = _trim_trailing_silence(pcm, voice.sample_rate)
        if part.pause_before and options.sentence_silence > 0:
            pcm = bytes(2 * round(options.sentence_silence * voice.sample_rate)) + pcm
        seconds = time.perf_counter() - started
        return SpokenSentence(part.text, voice.sample_rate, pcm, cached is not None, seconds)

    async def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    # --- on the worker thread --------------------------------------------------------------------

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
            }
        )

    def _synthesise(self, sentence: str, voice: Voice, options: SynthesisOptions, key: str) -> bytes:
        """The sentence's audio, written to the cache here, off the event loop."""
        pcm = self._run_piper(sentence, voice, options)
        if self.cache is not None:
            self.cache.put(key, CachedAudio(voice.sample_rate, pcm))
        return pcm

    def _run_piper(self, sentence: str, voice: Voice, options: SynthesisOptions) -> bytes:
        from piper.config import SynthesisConfig

        piper = self._piper(voice)
        config = SynthesisConfig(
            speaker_id=voice.speaker_id(options.speaker),
            length_scale=options.length_scale,
            noise_scale=options.noise_scale,
            noise_w_scale=options.noise_w_scale,
        )
        language = voice.languages[0]
        try:
            chunks: Iterable = piper.synthesize(spoken(sentence, language), syn_config=config)  # type: ignore[attr-defined]
            audio = [chunk.audio_int16_array for chunk in chunks]
        except Exception as err:  # espeak or onnxruntime: one sentence fails, not the server
            _LOGGER.exception("Piper failed on %r with voice %s", sentence, voice.name)
            raise SynthesisError(f"voice {voice.name} could not speak the text: {err}") from err
        return np.concatenate(audio).astype(np.int16).tobytes() if audio else b""

    def _piper(self, voice: Voice) -> object:
        """The loaded Piper voice, loading it (and unloading the least recently used) if needed."""
        with self._load_lock:
            loaded = self._loaded.get(voice.name)
            if loaded is not None and loaded[0] == voice.revision:
                self._loaded.move_to_end(voice.name)
                return loaded[1]
            started = time.perf_counter()
            piper = _load_piper(voice, self.plan)
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


def _load_piper(voice: Voice, plan: ComputePlan) -> object:
    import onnxruntime
    from piper.config import PiperConfig
    from piper.voice import PiperVoice

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = plan.cpu_threads
    options.inter_op_num_threads = 1
    providers: list = ["CPUExecutionProvider"]
    if plan.device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": plan.device_index}))
    try:
        session = onnxruntime.InferenceSession(
            str(voice.model_path), sess_options=options, providers=providers
        )
    except Exception as err:
        raise SynthesisError(f"voice {voice.name} cannot be loaded: {err}") from err
    return PiperVoice(session=session, config=PiperConfig.from_dict(voice.config))
