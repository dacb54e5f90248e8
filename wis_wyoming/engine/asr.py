"""Whisper ASR on CTranslate2 (faster-whisper): resident models, per-request options, workers.

Each resident model has its own worker threads and a bounded count of requests in flight, so two
models serve two clients in parallel, the event loop never runs inference, and overload is
refused with a clear error instead of an ever-growing queue. On a CPU a small model decodes on
one thread per worker, a worker per core, and encodes on all cores (see `ThreadLayout`).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import ctranslate2
import numpy as np
from faster_whisper.tokenizer import Tokenizer

from ..errors import InvalidRequestError, ModelLoadError, OverloadedError
from .audio import WHISPER_RATE
from .batch_decode import (
    COMPRESSION_RATIO_THRESHOLD,
    LOG_PROB_THRESHOLD,
    WindowRequest,
    WindowResult,
    decode_windows,
    prompt_tokens,
)
from .encoder_window import (
    MAX_NEW_TOKENS,
    WINDOW_FRAMES,
    EncoderWindow,
    PassAbandoned,
    WindowedWhisperModel,
)
from .hardware import ComputePlan
from .hush import hush_for
from .languages import normalise_language
from .models import ModelInfo, ModelRegistry
from .scheduler import BatchScheduler, Job
from .vad import SpeechGate
from .word_times import Word, align_words, in_order, shifted

_LOGGER = logging.getLogger(__name__)

TASKS = ("transcribe", "translate")
MAX_BEAM_SIZE = 20
WHISPER_MAX_TOKENS = 448  # the decoder's context: prompt and output together
# Token budget of a streaming update: fast read speech runs at about 4 tokens a second.
UPDATE_TOKENS_BASE = 12
UPDATE_TOKENS_PER_SECOND = 6
PROMPT_OVERHEAD_TOKENS = 8  # start-of-previous, start-of-transcript, language, task, timestamp
# Whisper's temperature fallback samples. CTranslate2 seeds each of its threads once, on first
# use, from this seed, so a model with one decoder replica, given the same requests in the same
# order, answers the same. With several replicas (see ThreadLayout) which one samples a request
# depends on timing, and a hard clip's fallback may pick other words from run to run; greedy
# decoding (temperature 0) always repeats.
SAMPLING_SEED = 0
# Models up to this size on disk get an encoder instance of their own on a CPU (a second copy of
# the weights; see encoder_window): tiny, base and small. Larger ones keep one instance.
SPLIT_ENCODER_MAX_BYTES = 600 << 20


@dataclass(frozen=True)
class ThreadLayout:
    """How a model's CTranslate2 instances use the CPU's threads."""

    decoder_threads: int  # per decoder replica
    workers: int  # decoder replicas, each with a scheduler thread: batches decoded side by side
    encoder_threads: int  # 0: the encoder runs on the decoder instance

    @classmethod
    def plan(cls, plan: ComputePlan, model_bytes: int) -> ThreadLayout:
        threads = plan.cpu_threads
        if plan.device != "cpu" or threads < 2 or model_bytes > SPLIT_ENCODER_MAX_BYTES:
            return cls(decoder_threads=threads, workers=1, encoder_threads=0)
        return cls(decoder_threads=1, workers=threads, encoder_threads=threads)


@dataclass(frozen=True)
class TranscriptionOptions:
    """One request's choices; None means the server's default."""

    model: str | None = None
    language: str | None = None  # a code, or "auto" to detect
    task: str | None = None
    beam_size: int | None = None
    initial_prompt: str | None = None


@dataclass(frozen=True)
class AsrDefaults:
    model: str
    language: str | None = None  # None: detect
    task: str = "transcribe"
    beam_size: int = 5
    initial_prompt: str | None = None
    max_queue: int = 8
    max_batch: int = 8  # passes of different requests decoded in one call (see batch_decode)
    # "adaptive": encode only the spoken frames (see encoder_window); "padded": Whisper's 30 s;
    # "auto": adaptive for English-only models, padded for multilingual ones, whose translations
    # lose words with the spliced window (base: "How do you call?" for "How do you call yourself?"),
    # but for their streaming drafts (see PassKind.DRAFT), whose words count only once a later
    # pass agrees.
    encoder_window: str = "auto"
    vad: bool = True  # refuse silence and trim it off both ends (see vad)


class PassKind(enum.Enum):
    """How a pass is decoded."""

    FINAL = "final"  # faster-whisper's decode: the model's window, temperature fallback
    # The model's window at temperature 0 only (a streaming pass at a pause, which is the answer
    # if the speaker has stopped; its `Decoded.confident` says whether the fallback was due).
    GREEDY = "greedy"
    # A quick streaming update: temperature 0, a budget from the duration.
    UPDATE = "update"
    # An update on the model's update window (see WindowedWhisperModel.update_window), cheaper
    # and less sure of a few seconds of audio than the model's own (base, on commands in real
    # time: "So time for three hours" committed for "Set a timer for 3 hours").
    DRAFT = "draft"


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float = 0.0  # gzip ratio of the text: above 2.4, the decoder looped
    words: tuple[Word, ...] | None = None  # aligned word times, when asked for (see word_times)


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str | None
    language_probability: float | None
    duration: float
    model: str
    task: str
    segments: list[Segment] = field(default_factory=list)
    queue_seconds: float = 0.0
    inference_seconds: float = 0.0


@dataclass(frozen=True)
class DecodeRequest:
    """Options checked against the chosen model, ready for faster-whisper."""

    language: str | None
    task: str
    beam_size: int
    initial_prompt: str | None


@dataclass(frozen=True)
class Decoded:
    """One decoder pass over up to 30 s of audio."""

    segments: list[Segment]
    language: str | None
    language_probability: float | None
    queue_seconds: float = 0.0
    inference_seconds: float = 0.0

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    @property
    def confident(self) -> bool:
        """No window of the pass would have sent faster-whisper to its temperature fallback."""
        return all(
            s.compression_ratio <= COMPRESSION_RATIO_THRESHOLD and s.avg_logprob >= LOG_PROB_THRESHOLD
            for s in self.segments
        )


@dataclass(frozen=True)
class _PassRequest:
    audio: np.ndarray
    request: DecodeRequest
    context: str | None
    kind: PassKind
    word_times: bool
    # Where the speech frames lie in `audio`, when the caller has scored it (a stream's passes):
    # then the speech gate only pads it. An empty span: no speech.
    speech: tuple[int, int] | None = None

    @property
    def prompt(self) -> str | None:
        """The text before the audio: what was said before it, else the initial prompt ("": no
        prompt at all)."""
        if self.context is not None:
            return self.context or None
        return self.request.initial_prompt


_Answer = tuple[list[Segment], str | None, float | None]
CONTEXT_BUCKETS = (1, 32, 128)  # prompt lengths (tokens) that share a batch: cut to the shortest


class ResidentModel:
    """A loaded model with its own worker threads, which decode queued passes in batches."""

    def __init__(
        self,
        info: ModelInfo,
        whisper: WindowedWhisperModel,
        load_seconds: float,
        gate: SpeechGate | None = None,
        max_batch: int = 8,
        workers: int = 1,
    ) -> None:
        self.info = info
        self.whisper = whisper
        self.load_seconds = load_seconds
        self.gate = gate
        self.in_flight = 0  # queued + running, counted on the event loop
        self.scheduler = BatchScheduler(info.name, self._run_batch, max_batch, workers)

    def submit(
        self,
        audio: np.ndarray,
        request: DecodeRequest,
        context: str | None,
        kind: PassKind,
        urgent: bool,
        word_times: bool = False,
        speech: tuple[int, int] | None = None,
    ) -> Job:
        """Queue a pass; the job's future gets (segments, language, probability)."""
        job = _PassRequest(audio, request, context, kind, word_times, speech)
        return self.scheduler.submit(job, self._batch_key(job), urgent)

    def _batch_key(self, job: _PassRequest) -> tuple | None:
        """Passes with equal keys share a decoder call; None decodes alone.

        Language detection and audio longer than one window take faster-whisper's own path.
        """
        request = job.request
        if request.language is None or len(job.audio) > WINDOW_FRAMES * WHISPER_RATE // 100:
            return None
        draft = self._on_update_window(job)
        if draft and getattr(self.whisper.update_window, "hush", None) is not None:
            return None  # each encoded to its own length: no common encoder output to batch
        tokens = len(prompt_tokens(self.whisper, job.prompt))
        bucket = sum(tokens >= edge for edge in CONTEXT_BUCKETS)
        return (request.language, request.task, request.beam_size, bucket, draft)

    def _on_update_window(self, job: _PassRequest) -> bool:
        """A draft on a model whose update window differs from its own (then it is not None:
        see WindowedWhisperModel.update_window)."""
        return job.kind is PassKind.DRAFT and self.whisper.update_window is not self.whisper.window

    def _run_batch(self, jobs: list[Job]) -> None:
        """Runs on the worker thread: trim each pass to its speech, decode what can share a
        batch together, and the rest (and whatever the batch gives back) one by one."""
        # A batch shares its key, so its passes are all drafts on the update window or none is.
        with self.whisper.updating(self._on_update_window(jobs[0].payload)):
            self._decode_batch(jobs)

    def _decode_batch(self, jobs: list[Job]) -> None:
        windows: list[tuple[Job, int, WindowRequest]] = []
        for job in jobs:
            try:
                if job.abandoned:
                    raise PassAbandoned
                request: _PassRequest = job.payload
                span = self._speech_span(request.audio, request.speech)
                if span is None:
                    # Nothing was said: nothing to transcribe.
                    job.future.set_result(([], request.request.language, None))
                    continue
                offset, end = span
                audio = request.audio[offset:end]
                guards = self._guards(len(audio) / WHISPER_RATE, request.prompt, request.kind)
                window = WindowRequest(audio, request.prompt, guards, request.word_times)
                windows.append((job, offset, window))
            except Exception as err:
                job.future.set_exception(err)
        results: list[WindowResult | None] = [None] * len(windows)
        if len(windows) > 1 and jobs[0].key is not None:
            first = jobs[0].payload.request
            try:
                results = decode_windows(
                    self.whisper, [w for _, _, w in windows], first.language, first.task, first.beam_size
                )
            except Exception:
                _LOGGER.exception("Batch of %d passes failed; decoding them one by one", len(windows))
        for (job, offset, window), result in zip(windows, results, strict=True):
            try:
                if result is None:
                    with self.whisper.abandonable(lambda job=job: job.abandoned):
                        answer = self._decode_window(window, offset, job.payload.request)
                else:
                    # A batch has a known language; faster-whisper reports such as certain.
                    answer = (self._segments(result, offset), job.payload.request.language, 1.0)
                job.future.set_result(answer)
            except Exception as err:
                job.future.set_exception(err)

    def _speech_span(self, audio: np.ndarray, speech: tuple[int, int] | None) -> tuple[int, int] | None:
        if self.gate is None:
            return (0, len(audio)) if len(audio) else None
        if speech is not None:
            return self.gate.padded(speech, len(audio))
        return self.gate.speech_span(audio)

    def _segments(self, result: WindowResult, offset: int) -> list[Segment]:
        shift = offset / WHISPER_RATE
        return [
            Segment(
                s.start + shift,
                s.end + shift,
                s.text,
                result.avg_logprob,
                result.no_speech_prob,
                result.compression_ratio,
                _shifted(s.words, shift),
            )
            for s in result.segments
        ]

    def _decode_window(self, window: WindowRequest, offset: int, request: DecodeRequest) -> _Answer:
        """faster-whisper's own path: one request, as many windows as it takes, with fallback.

        (Tried for streaming and dropped: forcing committed text as a decoder prefix (with
        timestamp tokens Whisper closes the prefix's segment and stops, skipping the rest;
        without them nothing tells it where the audio ends and it repeats itself). Nor would it
        save time through CTranslate2: `generate` runs only the tokens up to the task tokens as
        one batched forward pass, and decodes those after them one step at a time, forced or
        not. base int8 on this 2-core VM, 8 s of speech: 31 tokens generated in 254 ms, 25 of
        them forced and 6 generated in 249 ms; 50 tokens of previous text added 6 ms. A draft's
        time (about 0.31 s) went to generation 55 %, the encoder 26 %, alignment 9 %.)
        """
        with self.whisper.recording_windows(window.word_times) as windows:
            segments, info = self.whisper.transcribe(
                window.audio,
                language=request.language,
                task=request.task,
                beam_size=request.beam_size,
                initial_prompt=window.prompt,
                **window.guards,
            )
            # The generator decodes lazily: consume it here, on the worker thread.
            decoded = list(segments)
        words: list[list[Word]] | None = None
        if window.word_times and decoded and all(s.seek in windows for s in decoded):
            self.whisper.stop_if_abandoned()
            tokenizer = Tokenizer(
                self.whisper.hf_tokenizer, self.whisper.model.is_multilingual, request.task, info.language
            )
            words = []
            for seek, group in itertools.groupby(decoded, key=lambda s: s.seek):
                pieces = [{"seek": seek, "start": s.start, "end": s.end, "tokens": s.tokens} for s in group]
                encoder_output, frames = windows[seek]
                words += align_words(self.whisper, tokenizer, pieces, encoder_output, frames)
            words = in_order(words)
        shift = offset / WHISPER_RATE
        found = [
            Segment(
                s.start + shift,
                s.end + shift,
                s.text,
                s.avg_logprob,
                s.no_speech_prob,
                s.compression_ratio,
                _shifted(words[index], shift) if words is not None else None,
            )
            for index, s in enumerate(decoded)
        ]
        return found, info.language, info.language_probability

    def _guards(self, duration: float, prompt: str | None, kind: PassKind) -> dict:
        """Decoder guards, with the token budget kept inside Whisper's 448-token context
        (faster-whisper refuses a request whose prompt plus budget exceeds it). An update gets a
        tighter budget: with nothing to catch a loop on a word cut off at the end of the audio
        ("l-l-l-l-..."), the budget is what ends it."""
        guards = self.whisper.decoder_guards(duration)
        if kind is not PassKind.FINAL:
            guards["temperature"] = 0.0
        if kind in (PassKind.UPDATE, PassKind.DRAFT):
            budget = int(UPDATE_TOKENS_BASE + UPDATE_TOKENS_PER_SECOND * duration)
            guards["max_new_tokens"] = min(guards.get("max_new_tokens", budget), budget)
        if not prompt:
            return guards
        used = PROMPT_OVERHEAD_TOKENS + len(prompt_tokens(self.whisper, prompt))
        room = max(1, WHISPER_MAX_TOKENS - used)
        # A window decoded after the first in the same call (faster-whisper decodes what a first
        # window left out as another) has up to 223 previous tokens as its prompt.
        guards["max_new_tokens"] = min(guards.get("max_new_tokens", MAX_NEW_TOKENS), room)
        return guards


def _window_label(whisper: WindowedWhisperModel) -> str:
    if whisper.window is not None:
        return "adaptive"
    return "padded" if whisper.update_window is None else "padded (drafts: speech + hush)"


def _shifted(words: Iterable[Word] | None, seconds: float) -> tuple[Word, ...] | None:
    return None if words is None else tuple(shifted(words, seconds))


class AsrEngine:
    def __init__(self, registry: ModelRegistry, plan: ComputePlan, defaults: AsrDefaults) -> None:
        self.registry = registry
        self.plan = plan
        self.defaults = defaults
        self._resident: dict[str, ResidentModel] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._catalogue: list[ModelInfo] | None = None
        self._gate = SpeechGate() if defaults.vad else None
        ctranslate2.set_random_seed(SAMPLING_SEED)

    # --- models -------------------------------------------------------------------------------

    @property
    def resident(self) -> dict[str, ResidentModel]:
        return dict(self._resident)

    def catalogue(self) -> list[ModelInfo]:
        """Every model this server can use without a download, resident ones first.

        Listed once (at preload); models loaded since are merged in from the resident set.
        """
        if self._catalogue is None:
            self._catalogue = self.registry.catalogue()
        infos = [m.info for m in self._resident.values()]
        names = {i.name for i in infos}
        return infos + [i for i in self._catalogue if i.name not in names]

    def describe(self, name: str | None = None) -> ModelInfo:
        """Info on a model by name (default model if None), without loading it."""
        name = name or self.defaults.model
        if (resident := self._resident.get(name)) is not None:
            return resident.info
        return self.registry.describe(name)

    def choose_model(self, options: TranscriptionOptions) -> ModelInfo:
        """The named model; without a name, the default model if it can serve the request, else
        the first model (resident ones first) that can.

        Home Assistant names no model and sends its pipeline's language, so a German pipeline on
        a server whose default is tiny.en is served by a multilingual model instead of refused.
        """
        if options.model is not None:
            return self.describe(options.model)
        default = self.describe(self.defaults.model)
        if options.language is not None:
            language = normalise_language(options.language)
        else:
            language = self.defaults.language
        task = options.task or self.defaults.task

        def serves(info: ModelInfo) -> bool:
            language_ok = language is None or language in info.languages
            return language_ok and (task != "translate" or info.multilingual)

        if serves(default):
            return default
        # If none serves, the default model's check_options explains why.
        return next((info for info in self.catalogue() if serves(info)), default)

    def validate(self, options: TranscriptionOptions) -> ModelInfo:
        """Refuse a request early (before its audio arrives) if it cannot be served."""
        info = self.choose_model(options)
        self.check_options(info, options)
        return info

    async def preload(self, names: list[str], progress: bool = False) -> None:
        # Listing the HF cache takes a few hundred ms of file lookups: keep it off the event loop.
        self._catalogue = await asyncio.to_thread(self.registry.catalogue)
        for name in names:
            await self.model(name, progress)

    async def model(self, name: str | None = None, progress: bool = False) -> ResidentModel:
        """The resident model of that name, loading it on first use."""
        name = name or self.defaults.model
        if (resident := self._resident.get(name)) is not None:
            return resident
        # Unknown names fail here, before any thread is used.
        self.describe(name)
        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:
            if (resident := self._resident.get(name)) is None:
                resident = await asyncio.to_thread(self._load, name, progress)
                self._resident[name] = resident
        return resident

    def _load(self, name: str, progress: bool) -> ResidentModel:
        info = self.registry.resolve(name, progress)
        start = time.perf_counter()
        assert info.path is not None  # resolved
        weights = info.path / "model.bin"
        layout = ThreadLayout.plan(self.plan, weights.stat().st_size if weights.is_file() else 0)
        adaptive = self._adaptive_window(info)
        try:
            whisper = WindowedWhisperModel(
                str(info.path),
                window=EncoderWindow() if adaptive else None,
                update_window=self._update_window(info) if not adaptive else None,
                encoder_threads=layout.encoder_threads,
                device=self.plan.device,
                device_index=self.plan.device_index,
                compute_type=self.plan.compute_type,
                cpu_threads=layout.decoder_threads,
                num_workers=layout.workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelLoadError(f"cannot load model {name!r} from {info.path}: {err}") from err
        seconds = time.perf_counter() - start
        _LOGGER.info(
            "Loaded model %s (%s, %s, %s encoder window, %s) from %s in %.2f s",
            name,
            info.origin,
            "multilingual" if info.multilingual else "English-only",
            _window_label(whisper),
            layout,
            info.path,
            seconds,
        )
        return ResidentModel(info, whisper, seconds, self._gate, self.defaults.max_batch, layout.workers)

    def _update_window(self, info: ModelInfo) -> EncoderWindow | None:
        """Streaming updates of a model served on the padded window: the adaptive window with the
        hush learned for its weights (see hush), if one ships."""
        if self.defaults.encoder_window != "auto" or info.path is None:
            return None
        hush = hush_for(info.path)
        return EncoderWindow(hush=hush.features) if hush is not None else None

    def _adaptive_window(self, info: ModelInfo) -> bool:
        mode = self.defaults.encoder_window
        return mode == "adaptive" or (mode == "auto" and not info.multilingual)

    async def close(self) -> None:
        residents, self._resident = list(self._resident.values()), {}
        for resident in residents:
            # Waits for a transcription in progress; queued ones are cancelled.
            await asyncio.to_thread(resident.scheduler.close)

    # --- requests -----------------------------------------------------------------------------

    def check_options(self, info: ModelInfo, options: TranscriptionOptions) -> DecodeRequest:
        """Apply defaults and refuse what the model cannot do, with a message saying why."""
        task = options.task or self.defaults.task
        if task not in TASKS:
            raise InvalidRequestError(f"unknown task {task!r}; use transcribe or translate")
        beam_size = self.defaults.beam_size if options.beam_size is None else options.beam_size
        if not isinstance(beam_size, int) or not 1 <= beam_size <= MAX_BEAM_SIZE:
            raise InvalidRequestError(
                f"beam size must be an integer from 1 to {MAX_BEAM_SIZE}, got {beam_size!r}"
            )
        if options.language is not None:
            language = normalise_language(options.language)
        elif info.multilingual:
            language = self.defaults.language
        else:
            language = "en"
        if language is not None and language not in info.languages:
            if not info.multilingual:
                raise InvalidRequestError(
                    f"model {info.name} is English-only and cannot take language {language!r}; "
                    "choose a multilingual model such as base"
                )
            raise InvalidRequestError(f"model {info.name} does not know language {options.language!r}")
        if task == "translate" and not info.multilingual:
            raise InvalidRequestError(
                f"model {info.name} is English-only and cannot translate; "
                "choose a multilingual model such as base"
            )
        if not info.multilingual:
            language = "en"
        prompt = (
            options.initial_prompt if options.initial_prompt is not None else self.defaults.initial_prompt
        )
        return DecodeRequest(language, task, beam_size, prompt)

    async def prepare(
        self, options: TranscriptionOptions | None = None
    ) -> tuple[ResidentModel, DecodeRequest]:
        """The model that serves these options (loaded if need be) and the checked request."""
        options = options or TranscriptionOptions()
        resident = await self.model(self.choose_model(options).name)
        return resident, self.check_options(resident.info, options)

    async def decode(
        self,
        resident: ResidentModel,
        audio: np.ndarray,
        request: DecodeRequest,
        context: str | None = None,
        optional: bool = False,
        kind: PassKind = PassKind.FINAL,
        word_times: bool = False,
        speech: tuple[int, int] | None = None,
    ) -> Decoded | None:
        """One pass on the model's worker thread; `speech`, where the speech frames lie in the
        audio, if the caller has scored it already.

        A busy model refuses with OverloadedError, or returns None for an `optional` pass (a
        streaming update that the next one makes up for).
        """
        if resident.in_flight >= self.defaults.max_queue:
            if optional:
                return None
            raise OverloadedError(
                f"model {resident.info.name} is busy: {resident.in_flight} requests in flight "
                f"(limit {self.defaults.max_queue}); try again shortly"
            )
        resident.in_flight += 1
        queued_at = time.perf_counter()
        try:
            job = resident.submit(audio, request, context, kind, not optional, word_times, speech)
            try:
                segments, language, probability = await asyncio.wrap_future(job.future)
            except asyncio.CancelledError:
                job.abandon()  # a superseded streaming update: its core is wanted elsewhere
                raise
        finally:
            resident.in_flight -= 1
        started_at = job.started_at or queued_at
        return Decoded(
            segments, language, probability, started_at - queued_at, time.perf_counter() - started_at
        )

    async def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions | None = None
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 audio on a worker thread."""
        resident, request = await self.prepare(options)
        duration = len(audio) / WHISPER_RATE
        if not len(audio):
            return Transcription("", request.language, None, 0.0, resident.info.name, request.task)
        decoded = await self.decode(resident, audio, request)
        assert decoded is not None  # only optional passes are skipped
        return Transcription(
            text=decoded.text.strip(),
            language=decoded.language,
            language_probability=decoded.language_probability,
            duration=duration,
            model=resident.info.name,
            task=request.task,
            segments=decoded.segments,
            queue_seconds=decoded.queue_seconds,
            inference_seconds=decoded.inference_seconds,
        )
