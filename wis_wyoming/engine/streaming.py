"""Streaming transcription: decode while the audio arrives, commit what has settled.

A `TranscriptStream` takes audio as it comes. Whenever enough new audio has arrived (or the
speaker pauses), it runs a decoder pass over its buffer on the model's worker thread, at most
one pass at a time: audio that arrives during a pass waits for the next one, so a slow machine
skips passes instead of falling behind. Once a stream outgrows a voice command, its updates are
cheaper drafts where the model's own window is slow, and a short pause gets one too: a long
stream is read as it is committed, a command for its end.

Commit policy, LocalAgreement-2 (Macháček et al., Whisper-Streaming): a word is committed once
two consecutive passes agree on it (or a pass and the one before the last, see
_older_uncommitted) and the pass has heard past it, or at once if the decoder was sure of it (see
SURE_PROBABILITY), and committed text is never taken back. Each pass re-hears
the committed words still in its buffer; they are found again by text near the committed end, or
else by time: passes align their words by cross-attention (see word_times), and only the words
after the committed ones are compared and committed.

Work is reused across passes by dropping committed audio: once the buffer holds more than
`trim_seconds`, the audio up to the pause after the last committed clause leaves it (at once if
a pass stalls short of its audio) and its text becomes the prompt, so each pass decodes the
uncommitted tail and a little context. Past `max_buffer_seconds` the buffer is cut at the last
committed word (committing all but the last words by force if nothing settles), so a pass never
sees more than 30 s. At the end, only the tail is decoded; if nothing was said since the last
pass (the speaker paused and a pass ran then), that pass's words are the tail and no pass runs
at all; the final pass finds the committed words it hears again by text, and is aligned only
when they cannot be found so. An update still being decoded when the audio ends is abandoned: it
stops at its next stage, and the final pass starts at once, on another decoder worker where the
model has one (see asr.ThreadLayout), instead of queueing behind an update that it supersedes.
Passes whose words could not be aligned fall back to times spread over Whisper's segments, and
to cuts at segment ends.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .asr import AsrEngine, Decoded, DecodeRequest, PassKind, ResidentModel, Segment
from .audio import WHISPER_RATE
from .vad import FRAME_SAMPLES, SpeechTracker
from .word_times import Word, shifted

_LOGGER = logging.getLogger(__name__)

WINDOW_SECONDS = 30.0  # Whisper's window: no pass decodes more
LEAD_IN_SAMPLES = WHISPER_RATE  # silence kept before the first speech
_NOT_WORD = re.compile(r"[^\w]+")
# A word as word alignment splits them: at spaces, and before hyphens ("wake", "-word"), so that
# text matches between aligned passes and others see the same words.
_PIECE = re.compile(r"\s*-*[^\s-]+|\s*-+(?=\s|$)")
_CLAUSE_END = re.compile(r"[.,;:!?。，！？]['\"”)]*$")
# With aligned words, an update commits no word ending this close to the end of its audio: a
# word there may be the start of a longer one ("we" of "rewards"). A word the pass heard another
# word after is less likely to be cut off, and waits less, since the hold delays every commit by
# as much (base on test-clean with 0.25 s for all words: "so" committed for "soothed"). Longer
# holds did not buy accuracy: with 0.8 and 0.6 s, base's test-other WER read 8.7 and 10.5 % (9.2-11.2
# with these), for 0.15 s more p50 commit latency; its misheard words are heard so on later passes too.
EDGE_HOLD = 0.5
FOLLOWED_EDGE_HOLD = 0.25
# A word the decoder was this sure of (see word_times.Word.probability) commits from the first
# pass that heard it, once that pass heard SURE_HOLD past it, without waiting for the next pass
# to agree: base on shared/speech/longform test-other, of 96 such words (with no hold) 3 were
# heard otherwise by the next pass, against 10 of 207 at 0.8; words below 0.5 were wrong about
# half the time. (Tried: committing any word a pass heard 0.7 s past, agreed or not, as an
# attention-based policy commits from one pass. base on shared/speech/longform pooled, one run
# each the same day: p95 commit latency 1.77 s against 1.95, p50 1.02 against 1.05, but streamed
# WER +4.34 points over offline against +2.61 (test-clean +2.94 against +1.57). Only for words
# of probability 0.8 and up, test-clean's WER held (+0.98) and its p95 did not fall (2.13 s): the
# words left waiting for agreement are those the decoder is unsure of.)
SURE_PROBABILITY = 0.95
SURE_HOLD = 0.25
# A pass whose audio ends in this much silence (see vad.SpeechTracker) heard its last words
# whole: the edge holds would wait for nothing.
SILENT_EDGE = 0.2
# An aligned word shorter than this was given no audio of its own; if no word after it was, an
# update commits it only once it heard UNHEARD_HOLD past it (see heard_past).
UNHEARD_WORD = 0.02
UNHEARD_HOLD = 1.0
# An aligned word the decoder gave less than this probability (see word_times.Word.probability)
# is committed by an update only once it heard UNSURE_HOLD past it, even into silence: drafts
# committed such words wrong where offline had them right a third of the time (base on
# shared/speech/longform, six replays of bench/commit_replay.py: 34 of 103, against 4 % of all
# words), and Whisper writes them into loops ("Thine own bright eyes, thine own bright eyes" for
# "self thy foe", at 0.00-0.11). (Replays, seeds 0-2, with the agreement of two passes back and
# the confirming pause draft: streamed WER +2.34 points over offline against +3.19 without the
# hold, p95 commit latency 1.90 s against 1.77. All three over Wyoming in real time, two runs of
# bench/commit_latency.py: WER +1.66 and +2.29 points, p50 1.05 s, p95 2.13 and 2.04 s.)
UNSURE_PROBABILITY = 0.1
UNSURE_HOLD = 2.0
CLAUSE_PAUSE = 0.3  # with aligned words, the buffer is cut at most this far after a clause
# The final pass decodes from the last clause end, unless that leaves more than this much audio:
# then from a pause of at least WORD_PAUSE between committed words after it (see _cut_before_tail).
FINAL_TAIL_SECONDS = 4.0
WORD_PAUSE = 0.15
# A pass whose words end this long before its audio while speech went on has stalled; its
# buffer is cut this far after the last committed word (see pass_stalled).
STALL_SECONDS = 2.0
SENTENCE_STALL_SECONDS = 0.8  # the same after a committed clause end, everything heard committed
STALL_CUT_MARGIN = 0.1
FORCE_KEEP_WORDS = 2  # left uncommitted when a full buffer forces a commit
TIME_TOLERANCE = 0.1  # seconds of alignment jitter between passes
LOOP_RATIO = 2.4  # Whisper's own threshold on the gzip compression ratio of a segment
# A pass's words starting this long after the committed end are new. Word times are spread over
# their segment (see segment_words), so they can be off by a second or two in a long segment.
REPEAT_WINDOW = 3.0
# With aligned word times: only words starting this soon after the committed end can be
# repeats, and a re-heard committed word ends within this much of where it ended before.
ALIGNED_REPEAT_WINDOW = 1.0
ALIGNED_MATCH_TOLERANCE = 0.6
LANDING_WORDS = 3  # a re-heard stretch this long may land at its first word (see heard_again)
# Without aligned times, a matching stretch of at most this many words must not be preceded by
# this many more unmatched words in the pass than among the committed ones (see _stray_match).
STRAY_MATCH_WORDS = 2
ECHO_WORDS = 3  # the most committed words looked for again at the start of a pass's new words
# A pass is checked for having skipped the committed words in its buffer (see skipped_ahead) when
# it holds at least this many, among this many more of the pass's first words.
SKIP_CHECK_WORDS = 4
REACH_TOLERANCE = 1.0  # a pass whose words end this far before the speech stopped early
TRIM_MARGIN = 0.5  # cut this far before a committed segment's end: Whisper may end it late
RECENT_WORDS = 100  # committed words kept for the prompt and the overlap check
# Seconds since the speech began after which updates are drafts (see asr.PassKind): longer than
# a voice command (shared/speech/commands: 1.4-3.7 s), whose words draft updates got wrong.
# (Tried 2 s, when passes may first commit (FIRST_COMMIT_SPEECH): a long stream's first words,
# which wait 3-3.5 s for two of base's padded updates (0.8 s each) to agree, came 0.5-1 s sooner,
# but drafts over a command's first 2 s again put "So a timer" for "Set a timer" in the agreement.)
DRAFT_AFTER_SECONDS = 5.0
# Speech a pass must have heard, since the stream's first speech, before it commits anything.
# Over a second or so of speech, with no words before and few after, Whisper guesses at a
# stream's first words, and two greedy passes agreed on a guess: base "So the timer" for "Set
# a timer" and "Can't" for "Cancel"; tiny.en "and apples" for "add apples". On
# shared/speech/commands streamed in real time, commands whose streamed text was not the
# offline one went from 2-4 of 32 to 0-1 (base), 3-7 to 1-4 (tiny.en).
FIRST_COMMIT_SPEECH = 2.0
OWN_WINDOW_PASSES = 3  # the last passes on the model's own window that tell its speed


@dataclass(frozen=True)
class StreamingPolicy:
    # New audio that triggers a pass while someone speaks. (Tried 0.3 s, with sure words and
    # silent edges as now: base on test-other, p50 commit latency 0.82-0.85 s and p95 1.69-1.96 s,
    # against 1.06-1.10 and 2.08-2.48 s, but streamed WER 11.9-12.7 % against 9.7-10.5: words
    # committed with less audio after them, "occupied" for "occupy", "now" for "noticed". Holding
    # words below 0.5 probability until a pass heard 1.5 s past them took the latency back, p50
    # 1.03-1.04 s, for 10.7 % twice. And 0.9 s: 8.71 % in two runs, at p50 1.71 s, p95 3.2-3.4 s:
    # drafts with more new audio each settle better, at the latency of fewer passes.)
    pass_seconds: float = 0.5
    pause_seconds: float = 0.25  # a pause this long triggers a pass at once
    # Past DRAFT_AFTER_SECONDS, a pause gets a draft until it lasts this long, and only then the
    # final-quality pass that makes the end ready: on base (served on the padded window) that
    # pass takes a second, and the phrases after a short pause waited for it. (Tried 1.2 s: base
    # on test-other, p95 commit latency 2.06-2.08 s against 2.15-2.94, but streamed WER 13.7 and
    # 11.4 % against 9.2-11.2: the pause passes' words, heard on the model's own window, count.)
    long_pause_seconds: float = 0.6
    # Beyond this, committed audio leaves the buffer. (6 s made base's passes a fifth cheaper,
    # but tiny.en then once committed a word misheard over a short buffer after a cut, and lost
    # the words before it; base on test-other: p95 commit latency 1.97-2.11 s against 2.15-2.94,
    # streamed WER 11.4-12.2 % against 9.2-11.2 % in four runs at 10 s. 15 s did not hear better
    # for the longer audio: 11.9 and 12.4 %.)
    trim_seconds: float = 10.0
    max_buffer_seconds: float = 20.0  # beyond this, the buffer is cut at the last committed word
    # Committed text before the buffer, given as the prompt. (Tried on base's drafts, test-other:
    # 600 characters, streamed WER 10.5 and 11.0 %; none, 9.2-10.5 % in six runs; 200, 9.2-11.2 %
    # in four: no length told apart from the spread between runs.)
    context_chars: int = 200
    # Past DRAFT_AFTER_SECONDS, updates are drafts only while passes on the model's own window
    # take longer than this (the mean of the last OWN_WINDOW_PASSES). Drafts are fast and cost
    # accuracy: base on shared/speech/longform test-other, streamed WER read 8.7-12.2 % with
    # drafts (0.33 s a pass here) and 6.5-8.7 % in three runs with every update on the padded
    # window (offline: 5.97 %), but those take 0.8 s a pass on 2 cores: p50 commit latency
    # 2.5-2.8 s against 1.0-1.2 s. Where the model's own window is as fast as drafts are here (a
    # GPU), it serves; on a slow machine, `--encoder-window padded` buys the accuracy with latency.
    draft_above_seconds: float = 0.3
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
    superseded_passes: int = 0  # updates still running at the end, abandoned (see finish)
    draft_passes: int = 0  # updates decoded as drafts (see asr.PassKind.DRAFT)


@dataclass(frozen=True)
class StreamResult:
    text: str  # the whole transcript
    language: str | None
    language_probability: float | None
    duration: float
    model: str
    task: str
    stats: StreamStats


def segment_words(segment: Segment, offset: float) -> list[Word]:
    """A segment's words in stream seconds: aligned (see word_times) when the pass could be,
    else spread over the segment by character position (off by a second or two in a long
    segment)."""
    if segment.words is not None:
        return shifted(segment.words, offset)
    pieces = _PIECE.findall(segment.text)
    total = max(1, sum(len(p) for p in pieces))
    start, span = segment.start + offset, max(0.0, segment.end - segment.start)
    words, position = [], 0
    for piece in pieces:
        begin = start + span * position / total
        position += len(piece)
        words.append(Word(begin, start + span * position / total, piece))
    return words


def _same_word(a: Word, b: Word) -> bool:
    """Words agree if they differ only in case, spacing or punctuation."""
    key_a, key_b = _key(a), _key(b)
    return key_a == key_b if key_a or key_b else a.text.strip() == b.text.strip()


def settled_prefix(previous: list[Word], current: list[Word]) -> int:
    """How many leading words two hypotheses share (LocalAgreement-2) and can commit.

    Agreed words that are only punctuation ("...", "-") wait until a word follows: Whisper
    writes them into pauses, and a pause may end without another word. So does a word whose
    next piece goes on after a hyphen ("tin" of "tin-tare", split as alignment splits words):
    it is not whole yet, and two passes cut off in it agree on its first half.

    A word two passes hear differently holds back the words after it, however well they agree
    on those. (Tried: committing the later pass's version of one such word once the passes
    agree on the two words after it, at the same aligned times. base's p95 commit latency on
    test-clean fell by about 0.1 s (not on test-other), but of eight such words on the two the
    later pass had two wrong that the earlier had right ("stark" as "start", "till" as "to"),
    two right, and the rest wrong either way: no better than waiting for agreement.)
    """
    count = 0
    for old, new in zip(previous, current, strict=False):
        if not _same_word(old, new):
            break
        count += 1
    return whole_words(current, count)


def sure_prefix(current: list[Word], count: int, heard_until: float) -> int:
    """`count` settled words of a pass, extended by the words after them that the decoder was
    sure of (see SURE_PROBABILITY) and that the pass heard `SURE_HOLD` past: such a word rarely
    changes, and waiting for the next pass to agree delays it by a pass."""
    extended = count
    while extended < len(current):
        word = current[extended]
        if word.probability is None or word.probability < SURE_PROBABILITY:
            break
        if word.end > heard_until - SURE_HOLD:
            break
        extended += 1
    return max(count, whole_words(current, extended))


def whole_words(current: list[Word], count: int) -> int:
    """The first `count` words, less those at their end that must wait for a word after them
    (see settled_prefix)."""
    while count and not _key(current[count - 1]):
        count -= 1
    while 0 < count < len(current) and current[count].text.startswith("-"):
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
        self._recent: list[Word] = []  # the last committed words, times in stream seconds
        self._committed_end = 0.0  # where the last committed word ends, in stream seconds
        self._hypothesis: list[Word] = []  # the last pass's uncommitted words
        self._older_hypothesis: list[Word] = []  # the pass before's, if aligned (see _older_uncommitted)
        self._times_aligned = False  # the last pass's words were aligned (see word_times)
        self._last_pass_end = 0  # sample the last pass ran up to
        # Event-loop time the last pass started; the stream's start counts, so audio uploaded
        # in one go is over before any update could cut into it.
        self._last_pass_at = asyncio.get_running_loop().time()
        self._last_pass_full = False  # decoded with the final pass's window, not as an update
        # The last pass was decoded as the final pass would have been, so its words can be the
        # answer: a greedy pass at a pause that did not need the temperature fallback.
        self._last_pass_final = False
        self._language: tuple[str | None, float | None] = (request.language, None)
        self._wake = asyncio.Event()
        self._closing = False
        # The pass the worker is waiting for: (decoded as final, last sample it covers).
        self._in_flight: tuple[bool, int] | None = None
        self._generation = 0  # bumped when the end supersedes the pass in flight
        # The buffer start (samples) whose passes take no prompt: one skipped ahead with it.
        self._unprompted_from: int | None = None
        self._endpoint_sent = False
        self._confirmed_speech_end: float | None = None
        # Seconds the last passes on the model's own window took (see _update_kind).
        self._own_window_seconds: deque[float] = deque(maxlen=OWN_WINDOW_PASSES)
        self._worker = asyncio.create_task(self._run(), name="transcript-stream")

    @property
    def committed(self) -> str:
        return self._committed

    @property
    def decoding(self) -> bool:
        """A pass is being decoded in the background."""
        return self._in_flight is not None

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
        if self._in_flight is not None:
            await self._score_speech()  # the worker is waiting for its pass, not scoring
        # (The pass may have finished while the speech was scored.)
        if self._in_flight is not None and not self._in_flight_is_final():
            self._generation += 1
            self.stats.superseded_passes += 1
        if self._in_flight is None or self._generation == 0:
            await self._worker  # a pass in flight that can be the final one completes first
        else:
            # Its words would go unused: it stops at its next stage (see AsrEngine.decode).
            self._worker.cancel()
            self._worker.add_done_callback(_consume)
        await self._score_speech()
        tail = ""
        while self._buffer.seconds > WINDOW_SECONDS:
            # Passes fell behind (an overloaded machine): catch up a window at a time; each pass
            # over a full buffer commits and drops all but its last words.
            start = self._buffer.start
            tail += self._apply(await self._decode(optional=False), final=False)
            if self._buffer.start == start:
                break
        if self._needs_final_pass():
            self.stats.final_pass = True
            self._cut_before_tail()
            tail += self._apply(await self._final_pass(), final=True)
        else:
            tail += self._commit(self._hypothesis)
            self._hypothesis = []
        if tail and self._on_commit is not None:
            await self._on_commit(tail)
        language, probability = self._language
        return StreamResult(
            text=self._committed.strip(),
            language=language,
            language_probability=probability,
            duration=self.duration,
            model=self.resident.info.name,
            task=self.request.task,
            stats=self.stats,
        )

    async def _final_pass(self) -> _Pass:
        """The pass over the tail. The committed words it hears again are found by their text;
        only if they are not (Whisper heard them differently) is it decoded again with word
        times, to place the tail by time. Aligning every final pass costs about a fifth of it
        (tiny.en, 2.6 s: 110 ms against 87)."""
        passed = await self._decode(optional=False, word_times=False)
        assert passed is not None  # only optional passes are skipped
        _, words, in_buffer = self._heard(passed, final=True)
        if self._skipped_ahead(passed, words, in_buffer) or (
            in_buffer and heard_again(in_buffer, words, self._committed_end) is None
        ):
            # Now unprompted, if it skipped ahead.
            passed = await self._decode(optional=False, word_times=bool(in_buffer))
            assert passed is not None
        return passed

    def abort(self) -> None:
        """Stop passes and commits; no result will be asked for."""
        self._closing = True
        self._on_commit = None
        self._wake.set()

    async def cancel(self) -> None:
        """Stop without a result (the request failed or the client went away)."""
        self.abort()
        self._worker.cancel()  # a pass in flight stops at its next stage
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
                if due := self._pass_due():
                    # A pass at a pause is likely the last: decode it with the final pass's
                    # window, greedily, so that its words can be the answer (unless they needed
                    # the temperature fallback: that, the end decodes; a pause pass with it ran
                    # for seconds with base while the speaker went on). (Tried: leaving a pause
                    # pass unused once half a second of new speech arrived, so that an update
                    # could hear the next sentence without waiting for it. base on test-clean:
                    # every one of 23 pause passes (0.84 s each on the padded window) was left,
                    # but p95 commit latency went 1.83 -> 1.85-1.91 s: the update started only
                    # 0.1-0.2 s sooner, and ran slower beside the pass still decoding.)
                    kind = PassKind.GREEDY if due == "pause" else self._update_kind()
                    self._in_flight = (kind is PassKind.GREEDY, self._buffer.end)
                    try:
                        passed = await self._decode(optional=True, kind=kind)
                    finally:
                        self._in_flight = None
                    if self._generation:
                        break  # the end superseded this pass
                    if passed is None:
                        self.stats.skipped_passes += 1
                        continue
                    committed = self._apply(passed, final=False)
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

    def _pass_due(self) -> str | None:
        """ "update", "pause" (the speaker paused after speech no pass has heard), or None."""
        if not self._tracker.speech_started:
            return None  # silence so far: nothing to decode
        if asyncio.get_running_loop().time() - self._last_pass_at < self.policy.pass_seconds * 0.8:
            # Audio arriving faster than real time (an upload): one pass at the end does better
            # than updates over arbitrary cuts of it.
            return None
        # A pause after speech that no final-quality pass has heard (an update may have heard
        # it all, greedily): decode it now as the end would, and the end is ready. In a long
        # stream, a short pause gets a draft of what was said before it (two, if the first left
        # words waiting for agreement).
        heard_in_full = self._last_pass_full and not self._unheard_speech()
        pause = self._tracker.trailing_silence
        if pause >= self.policy.pause_seconds and not heard_in_full:
            if self._update_kind() is not PassKind.DRAFT or pause >= self.policy.long_pause_seconds:
                return "pause"
            return "update" if self._unheard_speech() or self._unconfirmed_before_pause() else None
        # Only new speech is worth an update: one over silence after the pause pass would only
        # replace that pass's final-quality words with a greedy decode, and the end would have
        # to decode them again.
        new_audio = (self._buffer.end - self._last_pass_end) / WHISPER_RATE
        return "update" if new_audio >= self.policy.pass_seconds and self._unheard_speech() else None

    def _unconfirmed_before_pause(self) -> bool:
        """The speaker paused, the last draft heard all the speech before the pause, and words
        it heard wait for a second pass to agree: a draft over the same speech confirms them
        now, once per pause, instead of the pause pass at `long_pause_seconds` (base: 0.9 s on
        the padded window), for which a sentence's last words waited 1.6-1.9 s. (base on
        shared/speech/longform, replayed with bench/commit_replay.py, seeds 0-2: p95 commit
        latency 1.90 s against 2.03, p50 1.02 against 1.04, streamed WER +2.84 points over
        offline against +2.71, within the spread of seeds. Tried: the confirming draft before
        the pause pass too, where the pause had already reached `long_pause_seconds` while the
        last draft ran: p95 1.82 s against 1.90, p50 1.01 against 1.03, but WER +2.98 against
        +2.34, worse in every seed: the pause pass hears a sentence's last words better
        than a draft.) True once per pause: the pause's speech is marked confirmed."""
        if not self._hypothesis:
            return False
        speech_end = self._tracker.last_speech_end
        if speech_end is None or speech_end == self._confirmed_speech_end:
            return False
        self._confirmed_speech_end = speech_end
        return True

    def _update_kind(self) -> PassKind:
        """Drafts once the stream has outgrown a voice command (see asr.PassKind.DRAFT), unless
        the model's own window is fast enough (see StreamingPolicy.draft_above_seconds)."""
        if self._spoken(self._buffer.end) < DRAFT_AFTER_SECONDS:
            return PassKind.UPDATE
        timed = self._own_window_seconds
        fast = bool(timed) and sum(timed) / len(timed) <= self.policy.draft_above_seconds
        return PassKind.UPDATE if fast else PassKind.DRAFT

    def _spoken(self, sample: int) -> float:
        """Seconds from the stream's first speech to `sample`."""
        first = self._tracker.first_speech_frame
        return 0.0 if first is None else max(0.0, (sample - first * FRAME_SAMPLES) / WHISPER_RATE)

    def _cut_before_tail(self) -> None:
        """The final pass needs the uncommitted tail, not the whole buffer: committed audio up to
        the last clause end leaves it, as a trim would (updates trim only long buffers, since
        they gain from hearing committed words again; the end does not). (Cutting at the last
        committed word made tiny.en's final pass on WIS's 10 s clip take 43 ms instead of 79, but
        its streamed WER on shared/speech/librispeech rose from 8.29 to 10.63 %: a tail heard
        without the words before it is misheard, "in almost the same times.", or lost.)

        Where Whisper put no comma for a while, the last clause end can be far back (on WIS's
        30 s clip, 8.7 s before the end in one run of three: 150 ms against 87 after the body):
        a tail longer than `FINAL_TAIL_SECONDS` is cut at the last pause between committed words
        instead. (tiny.en, shared/speech/librispeech streamed: the same 36 transcripts, median
        final pass 88 ms against 102; cutting at such pauses always changed two of them.)"""
        if not self._times_aligned:
            return
        settled = [cut for cut in self._clause_ends() if cut * WHISPER_RATE > self._buffer.start]
        tail_from = settled[-1] if settled else self._buffer.start / WHISPER_RATE
        if self._buffer.end / WHISPER_RATE - tail_from > FINAL_TAIL_SECONDS:
            settled += [cut for cut in self._word_pauses() if cut > tail_from]
        if settled:
            self._buffer.drop_before(int(settled[-1] * WHISPER_RATE))

    def _in_flight_is_final(self) -> bool:
        """The pass in flight can be the last one: decoded as a final pass, it hears all the
        speech there is."""
        assert self._in_flight is not None
        full, end = self._in_flight
        return full and not self._speech_after(end)

    def _unheard_speech(self) -> bool:
        return self._speech_after(self._last_pass_end)

    def _speech_after(self, sample: int) -> bool:
        speech_end = self._tracker.last_speech_end
        return speech_end is not None and speech_end * WHISPER_RATE > sample

    def _needs_final_pass(self) -> bool:
        if self._tracker.last_speech_end is None:
            return False  # not a frame of speech: the answer is empty, no pass needed
        # The last pass heard all the speech, but it must have been decoded as a final pass
        # (an update is greedy, with a tight budget), and Whisper may have stopped before its
        # last segment: its words must reach the end of the speech for them to be the tail.
        return (
            self._last_pass_end == 0
            or not self._last_pass_final
            or self._unheard_speech()
            or self._stops_short()
        )

    def _stops_short(self) -> bool:
        """The words heard so far end well before the speech does."""
        heard = [*self._recent[-1:], *self._hypothesis]
        reach = max((w.end for w in heard), default=0.0)
        return reach < (self._tracker.last_speech_end or 0.0) - REACH_TOLERANCE

    async def _decode(
        self, optional: bool, kind: PassKind = PassKind.FINAL, word_times: bool = True
    ) -> _Pass | None:
        """A pass over the buffer, decoded as `kind` says (see asr.PassKind)."""
        self._last_pass_at = asyncio.get_running_loop().time()
        generation = self._generation
        start = self._buffer.start
        end = min(self._buffer.end, start + int(WINDOW_SECONDS * WHISPER_RATE))
        audio = self._buffer.view(end)
        self.stats.max_buffer_seconds = max(self.stats.max_buffer_seconds, len(audio) / WHISPER_RATE)
        spoken_before = "".join(w.text for w in self._recent if w.end * WHISPER_RATE <= start)
        context = spoken_before[-self.policy.context_chars :].strip() or self.request.initial_prompt
        if start == self._unprompted_from:
            context = ""  # see _skipped_ahead
        speech_from, speech_to = self._tracker.speech_between(start, end)
        decoded = await self.engine.decode(
            self.resident,
            audio,
            self.request,
            context=context,
            optional=optional,
            kind=kind,
            word_times=word_times,
            speech=(speech_from - start, speech_to - start),
        )
        if decoded is None or generation != self._generation:
            return None  # skipped, or superseded by the end while it ran
        self.stats.passes += 1
        self.stats.draft_passes += kind is PassKind.DRAFT
        if kind in (PassKind.UPDATE, PassKind.GREEDY):
            self._own_window_seconds.append(decoded.inference_seconds)
        self._last_pass_end = end
        self._last_pass_full = kind in (PassKind.GREEDY, PassKind.FINAL)
        self._last_pass_final = kind is PassKind.FINAL or (kind is PassKind.GREEDY and decoded.confident)
        if decoded.segments and self.request.language is None and decoded.language is not None:
            # Detected once, kept: later passes neither flip language nor pay for detection.
            self.request = replace(self.request, language=decoded.language)
            self._language = (decoded.language, decoded.language_probability)
        return _Pass(decoded, start / WHISPER_RATE, prompted=bool(context))

    # --- the commit policy ---------------------------------------------------------------------

    def _heard(self, passed: _Pass, final: bool) -> tuple[list[Segment], list[Word], list[Word]]:
        """A pass's segments and their words, and the committed words still in its buffer."""
        segments = passed.decoded.segments
        if not final:
            # An update whose decoder looped ("l-l-l-l-...") is trusted up to the loop only.
            looped = next((i for i, s in enumerate(segments) if s.compression_ratio > LOOP_RATIO), None)
            segments = segments[:looped]
        words = [word for segment in segments for word in segment_words(segment, passed.offset)]
        in_buffer = [w for w in self._recent if w.end > passed.offset + TIME_TOLERANCE]
        return segments, words, in_buffer

    def _skipped_ahead(self, passed: _Pass, words: list[Word], in_buffer: list[Word]) -> bool:
        """The pass left out the committed words at the start of its buffer (see skipped_ahead),
        prompted: passes over this buffer take no prompt from now on, and its words go unused."""
        if not passed.prompted or not skipped_ahead(in_buffer, words):
            return False
        _LOGGER.debug(
            "pass at %.1f s heard %r, skipping the committed words it holds: %r",
            passed.offset,
            passed.decoded.text[:60],
            "".join(w.text for w in in_buffer)[-60:],
        )
        self._unprompted_from = self._buffer.start
        return True

    def _apply(self, passed: _Pass | None, final: bool) -> str:
        """Commit what this pass settles; returns the newly committed text."""
        assert passed is not None  # only optional passes are skipped
        segments, words, in_buffer = self._heard(passed, final)
        aligned = bool(segments) and all(segment.words is not None for segment in segments)
        previous_aligned, self._times_aligned = self._times_aligned, aligned
        if not final and self._skipped_ahead(passed, words, in_buffer):
            # Its words would be placed by time among the committed ones it skipped, and lost.
            return self._trim([s.end + passed.offset for s in segments], aligned)
        words = after_committed(in_buffer, words, self._committed_end, final, aligned)
        words = without_repeats(self._recent, words)
        if final:
            count = len(words)
        else:
            count = settled_prefix(self._hypothesis, words)
            heard = self._last_pass_end / WHISPER_RATE
            if aligned:
                count = max(count, settled_prefix(self._older_uncommitted(), words))
                count = sure_prefix(words, count, heard)
            if self._spoken(self._last_pass_end) < FIRST_COMMIT_SPEECH:
                count = 0
            if aligned:
                count = heard_past(words, count, heard, self._heard_into_silence())
        _LOGGER.debug(
            "pass at %.1f-%.1f s heard %r; commits %r | %r",
            passed.offset,
            self._last_pass_end / WHISPER_RATE,
            passed.decoded.text[-60:],
            "".join(w.text for w in words[:count]),
            "".join(w.text for w in words[count:]),
        )
        self._older_hypothesis = self._hypothesis if previous_aligned else []
        self._hypothesis = words[count:]
        committed = self._commit(words[:count])
        if not final:
            stalled = aligned and self._stalled(words)
            committed += self._trim([s.end + passed.offset for s in segments], aligned, stalled)
        return committed

    def _older_uncommitted(self) -> list[Word]:
        """The uncommitted words of the pass before the last, less those committed since (by
        aligned time): a pass may agree with them instead of the last pass's. Two passes of
        three agreeing settle a word the passes keep hearing two ways at the edge ("soothe",
        "sue the manga", "soothe among the lovely plants"), a pass sooner. (base on
        shared/speech/longform, bench/commit_replay.py, seeds 0-2, with the confirming pause
        draft: p95 commit latency 1.77 s against 1.90, streamed WER +3.19 points over offline
        against +2.84, within the spread of seeds; see UNSURE_PROBABILITY for the pair.)"""
        return [w for w in self._older_hypothesis if (w.start + w.end) / 2 >= self._committed_end]

    def _commit(self, words: list[Word]) -> str:
        """Append words to the committed text; returns the text appended."""
        if not words:
            return ""
        text = "".join(w.text for w in words)
        if not self._committed:
            text = text.lstrip()
        elif not text[:1].isspace() and text[:1].isalnum():
            text = " " + text  # a new segment's first word may come without its space
        self._committed += text
        self._recent = (self._recent + words)[-RECENT_WORDS:]
        self._committed_end = max(self._committed_end, words[-1].end)
        return text

    def _stalled(self, words: list[Word]) -> bool:
        """See `pass_stalled`."""
        return pass_stalled(
            last_committed=self._recent[-1].text if self._recent else "",
            all_committed=not self._hypothesis,
            reach=max((w.end for w in [*self._recent[-1:], *words]), default=0.0),
            heard_until=self._last_pass_end / WHISPER_RATE,
            speech_end=self._tracker.last_speech_end or 0.0,
        )

    def _heard_into_silence(self) -> bool:
        """The last pass's audio ends in `SILENT_EDGE` or more of silence (see SpeechTracker)."""
        _, speech_to = self._tracker.speech_between(self._buffer.start, self._last_pass_end)
        return self._last_pass_end - speech_to >= SILENT_EDGE * WHISPER_RATE

    def _trim(self, segment_ends: list[float], aligned: bool, stalled: bool = False) -> str:
        """Drop committed audio once the buffer grows long; returns text committed by force.

        With aligned word times, cuts in the pause after the last committed word that ends a
        clause ("harm done. | I say"), and a pass that stalled (see `_stalled`) cuts at once,
        after the last committed word if it heard nothing else. Without, at the end of the last
        committed segment (Whisper's own boundary, a pause in the speech) that lies before the
        last committed word, which stays in the buffer to anchor the next pass. Past
        `max_buffer_seconds`, at the last committed word, committing all but the last words by
        force if nothing has settled.
        """
        # What this pass heard decides, not what arrived since (an upload can hold 20 s more).
        seconds = (self._last_pass_end - self._buffer.start) / WHISPER_RATE
        if seconds <= self.policy.trim_seconds and not stalled:
            return ""
        forced = ""
        if aligned:
            settled = self._clause_ends()
            if stalled and not self._hypothesis and self._recent:
                settled = sorted([*settled, self._committed_end + STALL_CUT_MARGIN])
        else:
            anchor = self._recent[-1].start if self._recent else 0.0
            settled = [end - TRIM_MARGIN for end in segment_ends[:-1] if end - TRIM_MARGIN <= anchor]
        if settled and settled[-1] * WHISPER_RATE > self._buffer.start:
            cut = settled[-1]
        elif seconds > self.policy.max_buffer_seconds:
            if self._committed_end * WHISPER_RATE <= self._buffer.start:
                # Nothing committed in this buffer: the window fills up, so settle by force.
                if len(self._hypothesis) <= FORCE_KEEP_WORDS:
                    return ""
                pushed = self._hypothesis[:-FORCE_KEEP_WORDS]
                self._hypothesis = self._hypothesis[-FORCE_KEEP_WORDS:]
                forced = self._commit(pushed)
            cut = self._committed_end
        else:
            return ""
        self._buffer.drop_before(int(cut * WHISPER_RATE))
        self._last_pass_end = max(self._last_pass_end, self._buffer.start)
        self.stats.trims += 1
        return forced

    def _clause_ends(self) -> list[float]:
        """Points in the pauses after committed words that end a clause, where a later word is
        known: halfway to that word, at most `CLAUSE_PAUSE` after the clause's end."""
        return self._cuts_after(lambda word, after: bool(_CLAUSE_END.search(word.text)))

    def _word_pauses(self) -> list[float]:
        """Points in the pauses of at least `WORD_PAUSE` after committed words, placed as
        clause ends are."""
        return self._cuts_after(lambda word, after: after.start - word.end >= WORD_PAUSE)

    def _cuts_after(self, where: Callable[[Word, Word], bool]) -> list[float]:
        following = [*self._recent[1:], *self._hypothesis[:1]]
        return [
            min(word.end + CLAUSE_PAUSE, max(word.end, (word.end + after.start) / 2))
            for word, after in zip(self._recent, following, strict=False)
            if where(word, after)
        ]


def heard_past(words: list[Word], count: int, heard_until: float, heard_into_silence: bool) -> int:
    """How many of a pass's first `count` aligned words it heard far enough past to commit.

    A word that ends right at the edge of the audio may be the start of a longer one ("we" of
    "rewards"): it waits until the pass hears past it, unless the audio ended in silence. Words
    at the end of a pass aligned to no audio at all were not heard: Whisper ran on past the audio
    (base, a draft over 88.2-89.8 s of test-other prompted "... to get rid of the marshal of the
    province.": "that to get rid" heard, then "of the marshal of" in no time as the audio ended);
    a later pass, over more audio, hears what was said. (Holding every word aligned to no audio
    held back a real "I" that passes kept squeezing into no time, and all after it, for 10 s.)
    A word the decoder was unsure of (see UNSURE_PROBABILITY) waits to be heard well past.
    """
    ran_on = len(words)
    while ran_on and words[ran_on - 1].end - words[ran_on - 1].start < UNHEARD_WORD:
        ran_on -= 1
    for index, word in enumerate(words[:count]):
        last = index == len(words) - 1
        hold = 0.0 if heard_into_silence else EDGE_HOLD if last else FOLLOWED_EDGE_HOLD
        if index >= ran_on:
            hold = max(hold, UNHEARD_HOLD)
        if word.probability is not None and word.probability < UNSURE_PROBABILITY:
            hold = max(hold, UNSURE_HOLD)
        if word.end > heard_until - hold:
            return index
    return count


def pass_stalled(
    last_committed: str, all_committed: bool, reach: float, heard_until: float, speech_end: float
) -> bool:
    """A pass stopped well before the end of its audio (its words `reach` no further) while the
    speaker went on: Whisper leaves out a last segment it takes to be cut off, and passes over
    the same buffer keep doing so however long that segment grows; its buffer is cut.

    A new sentence is taken to be left out sooner: once a pass has committed all it heard, up to
    a clause end, `SENTENCE_STALL_SECONDS` before its audio ends, and speech went on after that
    clause. (base on test-clean: "It was this observation" was left out by two passes over a
    10 s buffer ending "... braided with gold.", and heard by the first pass after the trim cut
    there, 2.2 s after "It" was said. Cutting at once, p95 commit latency on
    shared/speech/longform fell from 1.82-1.94 s to 1.59-1.68 s, with WER the same within the
    point it moves between runs; over Wyoming (bench/commit_latency.py) test-clean's WER read
    6.23 % in four runs against 5.69 % in five of the old code, within the spread of runs but
    maybe a cost: a sentence start misheard over the short audio after the cut, "Under" as
    "Andrew" in one run.)
    """
    sentence_done = all_committed and bool(_CLAUSE_END.search(last_committed))
    limit = SENTENCE_STALL_SECONDS if sentence_done else STALL_SECONDS
    return heard_until - reach > limit and speech_end > reach + limit / 2


def _consume(task: asyncio.Task) -> None:
    """Retrieve a background task's outcome, so a failure is logged rather than left unread."""
    if not task.cancelled() and (err := task.exception()) is not None:
        _LOGGER.warning("Superseded streaming pass failed: %s", err)


@dataclass(frozen=True)
class _Pass:
    decoded: Decoded
    offset: float  # stream seconds where the pass's audio began
    prompted: bool = False  # decoded after a prompt (the text before its audio)


def after_committed(
    committed: list[Word],
    words: list[Word],
    committed_end: float,
    final: bool = False,
    aligned: bool = False,
) -> list[Word]:
    """The words of a pass that come after its audio's committed words.

    The pass re-transcribes the committed words still in the buffer; they are found by text
    (the last stretch that matches them), since word times jitter between passes. Only words
    that start near or before the committed end can be repeats, so a common word further on
    ("and") is never taken for one. With aligned word times (see word_times), "near" is
    tighter, a match must land where the committed words were, and words are otherwise placed
    by time. With times spread over segments, a text mismatch yields nothing for an update
    (Whisper sometimes stops before the last segment, which is still being spoken: guessing by
    such times would commit text twice); the final pass is placed by time.
    """
    if committed:
        if (after := heard_again(committed, words, committed_end, aligned)) is not None:
            return words[after:]
        if not final and not aligned:
            return []
    if aligned:
        later = [w for w in words if (w.start + w.end) / 2 >= committed_end]
        return _without_echo(committed, later, committed_end)
    return [w for w in words if w.start >= committed_end - TIME_TOLERANCE]


def heard_again(
    committed: list[Word], words: list[Word], committed_end: float, aligned: bool = False
) -> int | None:
    """Where the words after `committed` begin in a pass's `words`, found by text (the last
    stretch that matches them), or None. See after_committed."""
    window = ALIGNED_REPEAT_WINDOW if aligned else REPEAT_WINDOW
    # A prefix, so a candidate's index is its index in `words`.
    near = [i for i, w in enumerate(words) if w.start < committed_end + window]
    candidates = [_key(w) for w in words[: near[-1] + 1 if near else 0]]
    matcher = difflib.SequenceMatcher(a=[_key(w) for w in committed], b=candidates, autojunk=False)
    blocks = [block for block in matcher.get_matching_blocks() if block.size]
    if not blocks:
        return None
    last = blocks[-1]
    unmatched_tail = len(committed) - (last.a + last.size)
    if unmatched_tail > 1:
        return None
    after = last.b + last.size
    if not aligned:
        # The last committed word may have been re-heard differently.
        return None if _stray_match(blocks) else after + unmatched_tail
    # The stretch must land where the committed words were: at its last word, or, for a longer
    # stretch, its first. (A pass that copied its prompt into its audio had "that to get rid of
    # the marshal of" squeezed into 89.0-89.8 s; the next heard the words again out to 90.6 s.)
    ends = [(last.b + last.size - 1, last.a + last.size - 1)]
    if last.size >= LANDING_WORDS:
        ends.append((last.b, last.a))
    if not any(_lands(words[b], committed[a]) for b, a in ends):
        return None
    if unmatched_tail and after < len(words) and not _lands(words[after], committed[-1]):
        return after  # the last committed word was not heard again here: what follows is new
    return after + unmatched_tail


def _lands(again: Word, was: Word) -> bool:
    return abs(again.end - was.end) <= ALIGNED_MATCH_TOLERANCE


def _stray_match(blocks: list[difflib.Match]) -> bool:
    """The last matching stretch is a common word or two far on in the pass, not where the
    committed words end: committed "... ladled out and thick" against "... ladled out in thick
    peppered flour fat and sauce" matches "and" before "sauce". Without aligned times to tell,
    a short stretch is trusted only if the pass has at most a couple more words before it, since
    the stretch before, than the committed words have."""
    last = blocks[-1]
    if last.size > STRAY_MATCH_WORDS:
        return False
    before_a, before_b = (
        (blocks[-2].a + blocks[-2].size, blocks[-2].b + blocks[-2].size) if len(blocks) > 1 else (0, 0)
    )
    return (last.b - before_b) - (last.a - before_a) > STRAY_MATCH_WORDS


def skipped_ahead(committed: list[Word], words: list[Word]) -> bool:
    """A pass left out the committed words at the start of its buffer: fewer than a third of
    them are heard again, in order, among its first words (a re-heard stretch with words
    misheard keeps more: "that this master perishes" for "that is master pernicious").

    Whisper skips audio that its prompt seems to have covered already. On test-other, tiny.en
    given the prompt "... to secure the wrongs right to vote." over audio that repeats the
    phrase ("that to secure the recognition of Flerov's right to vote, they must decide")
    heard only "They must decide.", with "They" aligned among the skipped words, where it was
    taken for a committed one and lost.

    (Tried: the same for a prompted update whose new words repeat five or more of its prompt's,
    packed into less audio than their letters take at 20 a second, Whisper having written its
    prompt out again over the audio. In nine replays of base on shared/speech/longform
    (bench/commit_replay.py, seeds 0-2) it fired twice, on one pass that had copied and one
    that had run on past its audio with the prompt's next words; the buffer left unprompted
    then heard "marshal" as "Martian". Pooled: p95 1.88 s, WER +2.40 points, against 1.90 s
    and +2.34 without.)
    """
    keys = [key for key in map(_key, committed) if key]
    if len(keys) < SKIP_CHECK_WORDS:
        return False
    first = [key for key in map(_key, words[: len(committed) + SKIP_CHECK_WORDS]) if key]
    matcher = difflib.SequenceMatcher(a=keys, b=first, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return matched * 3 < len(keys)


def _without_echo(committed: list[Word], words: list[Word], committed_end: float) -> list[Word]:
    """`words` less the last committed words heard again right after them: a re-heard word
    whose aligned time moved past the committed end ("pieces pieces to be ladled")."""
    if not words or words[0].start >= committed_end + ALIGNED_REPEAT_WINDOW:
        return words
    keys = [_key(w) for w in words]
    for size in range(min(ECHO_WORDS, len(committed), len(words)), 0, -1):
        if keys[:size] == [_key(w) for w in committed[-size:]] and any(keys[:size]):
            return words[size:]
    return words


def without_repeats(before: list[Word], words: list[Word]) -> list[Word]:
    """`words` less a run-on repeat at its end ("Set a timer for 30 seconds. Set a timer for 30
    seconds."). Blocks of two or more words repeated back to back count; a repeated single word
    ("no, no") does not. The repeat may echo the committed words before `words`."""
    keys = [_key(w) for w in [*before, *words]]
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


def _key(word: Word) -> str:
    return _NOT_WORD.sub("", word.text).lower()
