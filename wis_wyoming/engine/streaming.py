"""Streaming transcription: decode while the audio arrives, commit what has settled.

A `TranscriptStream` takes audio as it comes. Whenever enough new audio has arrived (or the
speaker pauses), it runs a decoder pass over its buffer on the model's worker thread, at most
one pass at a time: audio that arrives during a pass waits for the next one, so a slow machine
skips passes instead of falling behind.

Commit policy, LocalAgreement-2 (Macháček et al., Whisper-Streaming): a word is committed once
two consecutive passes agree on it. Committed text is never taken back. Each pass forces the
decoder through the committed words of the buffer as a prefix (WhisperKit's prefix tokens), so
it only generates the uncommitted tail, and commits are always extensions of what was sent.

The buffer stays short: once it holds more than `trim_seconds`, the audio of fully committed
segments is dropped and their text becomes the prompt for later passes; past
`max_buffer_seconds`, all but the last segment are committed and dropped, so a pass never sees
more than 30 s. At the end, only the uncommitted tail is decoded; if nothing was said since the
last pass (the speaker paused and a pass ran then), its hypothesis is the tail and no pass runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .asr import AsrEngine, Decoded, DecodeRequest, ResidentModel, Word
from .audio import WHISPER_RATE
from .vad import FRAME_SAMPLES, SpeechTracker

_LOGGER = logging.getLogger(__name__)

WINDOW_SECONDS = 30.0  # Whisper's window: no pass decodes more
LEAD_IN_SAMPLES = WHISPER_RATE  # silence kept before the first speech
_WORD = re.compile(r"\s*\S+")
_NOT_WORD = re.compile(r"[^\w]+")
SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")
FORCE_KEEP_WORDS = 2  # left uncommitted when a full buffer forces a commit


@dataclass(frozen=True)
class StreamingPolicy:
    pass_seconds: float = 0.5  # new audio that triggers a pass while someone speaks
    pause_seconds: float = 0.25  # a pause this long triggers a pass at once
    trim_seconds: float = 10.0  # beyond this, committed segments leave the buffer
    max_buffer_seconds: float = 20.0  # beyond this, all but the last segment are committed
    context_chars: int = 200  # committed text before the buffer, given as the prompt
    # Server-side endpoint: the final transcript is due after this much silence following speech
    # (None: the client says when the audio ends).
    endpoint_silence: float | None = None


@dataclass
class StreamStats:
    passes: int = 0
    skipped_passes: int = 0  # the model was busy with other requests
    max_buffer_seconds: float = 0.0
    trims: int = 0
    final_pass: bool = False  # False: the last streaming pass already had the whole tail


@dataclass(frozen=True)
class StreamResult:
    text: str  # the whole transcript
    tail: str  # what the end added to the committed text (also sent to `on_commit`)
    language: str | None
    language_probability: float | None
    duration: float
    model: str
    task: str
    stats: StreamStats


def _same_word(a: str, b: str) -> bool:
    """Words agree if they differ only in case, spacing or punctuation."""
    key_a, key_b = _NOT_WORD.sub("", a).lower(), _NOT_WORD.sub("", b).lower()
    return key_a == key_b if key_a or key_b else a.strip() == b.strip()


def agreed_prefix(previous: list[Word], current: list[Word]) -> int:
    """How many leading words two hypotheses share (LocalAgreement-2)."""
    count = 0
    for old, new in zip(previous, current, strict=False):
        if not _same_word(old.text, new.text):
            break
        count += 1
    return count


def _settled(count: int, words: list[Word]) -> int:
    """Hold back agreed words that are only punctuation ("...", "-") until a word follows:
    Whisper writes them into pauses, and a pause may end without another word."""
    while count and not _NOT_WORD.sub("", words[count - 1].text):
        count -= 1
    return count


@dataclass
class _AudioBuffer:
    """Audio from `start` (samples since the stream began) to `end`, kept as arriving pieces."""

    start: int = 0
    end: int = 0
    pieces: list[np.ndarray] = field(default_factory=list)

    def append(self, audio: np.ndarray) -> None:
        if len(audio):
            self.pieces.append(audio)
            self.end += len(audio)

    def view(self, stop: int) -> np.ndarray:
        joined = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)
        self.pieces = [joined] if len(joined) else []
        return joined[: stop - self.start]

    def drop_before(self, sample: int) -> None:
        sample = min(max(sample, self.start), self.end)
        joined = self.view(self.end)
        self.pieces = [joined[sample - self.start :]] if sample < self.end else []
        self.start = sample

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / WHISPER_RATE


class TranscriptStream:
    """One streaming request. `push` audio, then `finish` for the result.

    `on_commit(text)` receives each newly committed piece, in order; joined, the pieces equal
    the final text. `on_endpoint()` is called once if `policy.endpoint_silence` is set and the
    speaker has stopped.
    """

    def __init__(
        self,
        engine: AsrEngine,
        resident: ResidentModel,
        request: DecodeRequest,
        policy: StreamingPolicy | None = None,
        on_commit: Callable[[str], Awaitable[None]] | None = None,
        on_endpoint: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.resident = resident
        self.request = request
        self.policy = policy or StreamingPolicy()
        self.stats = StreamStats()
        self._on_commit = on_commit
        self._on_endpoint = on_endpoint
        self._buffer = _AudioBuffer()
        self._tracker = SpeechTracker()
        self._unscored: list[np.ndarray] = []  # audio the speech tracker has not seen yet
        self._committed = ""  # all committed text, as sent
        self._buffer_committed = ""  # the committed text spoken inside the buffer: the prefix
        self._context = ""  # committed text spoken before the buffer
        self._hypothesis: list[Word] = []  # the last pass's uncommitted words
        self._last_pass_end = 0  # sample the last pass ran up to
        self._language: tuple[str | None, float | None] = (request.language, None)
        self._wake = asyncio.Event()
        self._closing = False
        self._endpoint_sent = False
        self._worker = asyncio.create_task(self._run(), name="transcript-stream")

    @property
    def committed(self) -> str:
        return self._committed

    @property
    def duration(self) -> float:
        return self._buffer.end / WHISPER_RATE

    def push(self, audio: np.ndarray) -> None:
        """Add 16 kHz mono float32 audio; passes run in the background."""
        if self._closing:
            return
        self._buffer.append(audio)
        self._unscored.append(audio)
        self._wake.set()

    async def finish(self) -> StreamResult:
        """Decode what is left after the last commit and return the whole transcript."""
        self._closing = True
        self._wake.set()
        await self._worker  # the pass in flight, if any, completes first
        await self._score_speech()
        tail = ""
        while self._buffer.seconds > WINDOW_SECONDS:
            # Passes fell behind (an overloaded machine): catch up a window at a time; each pass
            # commits and drops all but its last segment.
            start = self._buffer.start
            decoded = await self._decode(optional=False)
            assert decoded is not None
            tail += self._apply(decoded, final=False)
            if self._buffer.start == start:
                break
        if self._needs_final_pass():
            self.stats.final_pass = True
            decoded = await self._decode(optional=False, word_times=bool(self._buffer_committed.strip()))
            assert decoded is not None
            tail += self._apply(decoded, final=True)
        else:
            tail += self._emit("".join(w.text for w in self._hypothesis))
            self._hypothesis = []
        if tail and self._on_commit is not None:
            await self._on_commit(tail)
        language, probability = self._language
        return StreamResult(
            text=self._committed.strip(),
            tail=tail,
            language=language,
            language_probability=probability,
            duration=self.duration,
            model=self.resident.info.name,
            task=self.request.task,
            stats=self.stats,
        )

    def abort(self) -> None:
        """Stop passes and commits; no result will be asked for."""
        self._closing = True
        self._on_commit = None
        self._wake.set()

    async def cancel(self) -> None:
        """Stop without a result (the request failed or the client went away)."""
        self.abort()
        await asyncio.gather(self._worker, return_exceptions=True)

    # --- the background worker -----------------------------------------------------------------

    async def _run(self) -> None:
        """Score speech as audio arrives and run passes when due; one thing at a time."""
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                break
            try:
                await self._score_speech()
                self._check_endpoint()
                if self._tracker.last_speech_end is None:
                    # Nothing said yet: keep a second of lead-in, not minutes of silence.
                    self._buffer.drop_before(self._tracker.frames * FRAME_SAMPLES - LEAD_IN_SAMPLES)
                if self._pass_due():
                    decoded = await self._decode(optional=True)
                    if decoded is None:
                        self.stats.skipped_passes += 1
                        continue
                    committed = self._apply(decoded, final=False)
                    if committed and self._on_commit is not None:
                        await self._on_commit(committed)
            except ConnectionError:
                raise
            except Exception:  # a failed update must not lose the request: the end retries
                _LOGGER.exception("Streaming pass failed; the final pass will cover its audio")

    async def _score_speech(self) -> None:
        if not self._unscored:
            return
        audio, self._unscored = np.concatenate(self._unscored), []
        await asyncio.to_thread(self._tracker.push, audio)

    def _check_endpoint(self) -> None:
        silence = self.policy.endpoint_silence
        if silence is None or self._endpoint_sent or not self._tracker.ended(silence):
            return
        self._endpoint_sent = True
        if self._on_endpoint is not None:
            self._on_endpoint()

    def _pass_due(self) -> bool:
        if not self._tracker.speech_started:
            return False  # silence so far: nothing to decode
        new_audio = (self._buffer.end - self._last_pass_end) / WHISPER_RATE
        if new_audio >= self.policy.pass_seconds:
            return True
        # A pause after speech the last pass has not heard: decode now, and the end is ready.
        return self._tracker.trailing_silence >= self.policy.pause_seconds and self._unheard_speech()

    def _unheard_speech(self) -> bool:
        speech_end = self._tracker.last_speech_end
        return speech_end is not None and speech_end * WHISPER_RATE > self._last_pass_end

    def _needs_final_pass(self) -> bool:
        if not self._tracker.speech_started and self._tracker.last_speech_end is None:
            return False  # not a frame of speech: the answer is empty, no pass needed
        if self._last_pass_end == 0:
            return True
        # Frames the tracker has not scored (under 32 ms) cannot hold a word worth a pass.
        return self._unheard_speech()

    async def _decode(self, optional: bool, word_times: bool = True) -> Decoded | None:
        """A pass over the buffer. Passes that continue committed text decode without timestamp
        tokens and align words instead (see ResidentModel.decode); a final pass with nothing
        committed in its buffer is an ordinary guarded decode, the one the WER gate measured."""
        end = min(self._buffer.end, self._buffer.start + int(WINDOW_SECONDS * WHISPER_RATE))
        audio = self._buffer.view(end)
        self.stats.max_buffer_seconds = max(self.stats.max_buffer_seconds, len(audio) / WHISPER_RATE)
        context = self._context[-self.policy.context_chars :].strip() or None
        if context is None:
            context = self.request.initial_prompt
        decoded = await self.engine.decode(
            self.resident,
            audio,
            self.request,
            prefix=self._buffer_committed.strip() or None,
            context=context,
            optional=optional,
            word_times=word_times,
        )
        if decoded is None:
            return None
        self.stats.passes += 1
        self._last_pass_end = end
        if decoded.segments and self.request.language is None and decoded.language is not None:
            # Detected once, kept: later passes neither flip language nor pay for detection.
            self.request = replace(self.request, language=decoded.language)
            self._language = (decoded.language, decoded.language_probability)
        return decoded

    # --- the commit policy ---------------------------------------------------------------------

    def _apply(self, decoded: Decoded, final: bool) -> str:
        """Commit what this pass settles; returns the newly committed text."""
        head = " " + self._buffer_committed.strip() if self._buffer_committed.strip() else ""
        prefix_words, words = split_at_prefix(decoded, head)
        words = without_repeats(prefix_words, words)
        count = len(words) if final else _settled(agreed_prefix(self._hypothesis, words), words)
        _LOGGER.debug(
            "pass over %.1f s: ...%r + %r | %r",
            self._buffer.seconds,
            head[-30:],
            "".join(w.text for w in words[:count]),
            "".join(w.text for w in words[count:]),
        )
        self._hypothesis = words[count:]
        new_text = "".join(w.text for w in words[:count])
        self._buffer_committed = head + new_text
        committed = self._emit(new_text)
        if not final:
            committed += self._trim(prefix_words + words[:count])
        return committed

    def _emit(self, text: str) -> str:
        """Append to the committed text; the first piece loses its leading space."""
        if not self._committed:
            text = text.lstrip()
        self._committed += text
        return text

    def _trim(self, committed: list[Word]) -> str:
        """Drop the audio of committed words once the buffer grows long.

        Cuts after the last committed sentence, or (past `max_buffer_seconds`) after the last
        committed word, committing all but the last two words by force if nothing settles.
        Returns the text committed by force. Word times count from the buffer's start.
        """
        seconds = self._buffer.seconds
        if seconds <= self.policy.trim_seconds:
            return ""
        forced = ""
        cut = _last_index(committed, lambda w: w.text.rstrip().endswith(SENTENCE_ENDS))
        if cut is None and seconds > self.policy.max_buffer_seconds:
            if not committed and len(self._hypothesis) > FORCE_KEEP_WORDS:
                pushed = self._hypothesis[:-FORCE_KEEP_WORDS]
                self._hypothesis = self._hypothesis[-FORCE_KEEP_WORDS:]
                text = "".join(w.text for w in pushed)
                forced = self._emit(text)
                self._buffer_committed += text
                committed = committed + pushed
            cut = len(committed) - 1 if committed else None
        if cut is None:
            return forced
        word = committed[cut]
        following = [*committed[cut + 1 :], *self._hypothesis]
        cut_time = (word.end + following[0].start) / 2 if following else word.end
        if cut_time <= 0:
            return forced
        chars = sum(len(w.text) for w in committed[: cut + 1])
        self._context += self._buffer_committed[:chars]
        self._buffer_committed = self._buffer_committed[chars:]
        self._buffer.drop_before(self._buffer.start + int(cut_time * WHISPER_RATE))
        self._last_pass_end = max(self._last_pass_end, self._buffer.start)
        self.stats.trims += 1
        return forced


def split_at_prefix(decoded: Decoded, head: str) -> tuple[list[Word], list[Word]]:
    """A pass's words, split into the forced prefix `head` and the words that follow it.

    Word texts joined give the decoded text, which starts with the prefix; a word that
    straddles the end of the prefix is split in two. Should the text ever not start with the
    prefix, the part that does not match counts as new.
    """
    text = decoded.text
    words = [w for segment in decoded.segments for w in segment.words]
    if "".join(w.text for w in words) != text:
        # No usable alignment (should not happen): words without times of their own.
        start, end = (decoded.segments[0].start, decoded.segments[-1].end) if decoded.segments else (0, 0)
        words = [Word(start, end, piece) for piece in _WORD.findall(text)]
    shared = len(head)
    while shared and not text.startswith(head[:shared]):
        shared -= 1
    if shared < len(head):
        _LOGGER.warning("Decoder output does not start with the committed prefix: %r", text[:80])
    before, after, position = [], [], 0
    for word in words:
        cut = min(max(shared - position, 0), len(word.text))
        if cut:
            before.append(Word(word.start, word.end, word.text[:cut]))
        if cut < len(word.text):
            after.append(Word(word.start, word.end, word.text[cut:]))
        position += len(word.text)
    if not head and after and not after[0].text[:1].isspace():
        # Words are space-led; keep the space where a new buffer's text joins the old.
        after[0] = Word(after[0].start, after[0].end, " " + after[0].text)
    return before, after


def without_repeats(before: list[Word], words: list[Word]) -> list[Word]:
    """`words` less a run-on repeat at its end ("Set a timer for 30 seconds. Set a timer for 30
    seconds."): without timestamp tokens, nothing tells the decoder that the audio has ended.
    Blocks of two or more words repeated back to back count; a repeated single word ("no, no")
    does not. The repeat may echo the committed text before `words`."""
    keys = [_NOT_WORD.sub("", w.text).lower() for w in [*before, *words]]
    keep = len(keys)
    shortened = True
    while shortened:
        shortened = False
        for size in range(2, keep // 2 + 1):
            block = keys[keep - size : keep]
            if keep - size >= len(before) and keys[keep - 2 * size : keep - size] == block and any(block):
                keep -= size
                shortened = True
                break
    return words[: keep - len(before)]


def _last_index(words: list[Word], test: Callable[[Word], bool]) -> int | None:
    return next((i for i in range(len(words) - 1, -1, -1) if test(words[i])), None)
