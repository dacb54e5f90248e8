"""Silero VAD (the ONNX model in faster-whisper's assets): is there speech, and where.

Whisper has no notion of "nothing was said": on silence, room noise or mains hum, tiny.en answers
" ." (measured), and larger models are known for "Thank you." So audio with no speech is not
transcribed at all, and leading and trailing silence is cut before encoding, which also shrinks
the adaptive encoder window. About 6 ms for a 3 s command on 2 cores.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from .audio import WHISPER_RATE


@dataclass(frozen=True)
class SpeechGate:
    threshold: float = 0.5
    # Kept around the speech: Silero marks onsets late and soft endings early. With tiny.en on
    # librispeech + commands + misc, 0.3 s cost 2.6 WER points (clipped onsets on misc); 0.6 s
    # matched no trimming (13.29 % against 13.24 %, within run-to-run noise).
    pad_seconds: float = 0.6

    def speech_span(self, audio: np.ndarray) -> tuple[int, int] | None:
        """Sample range from the first speech to the last (padded), or None if there is none."""
        if not len(audio):
            return None
        options = VadOptions(threshold=self.threshold, speech_pad_ms=int(self.pad_seconds * 1000))
        speech = get_speech_timestamps(audio, options, sampling_rate=WHISPER_RATE)
        if not speech:
            return None
        return max(0, speech[0]["start"]), min(len(audio), speech[-1]["end"])

    def padded(self, speech: tuple[int, int], length: int) -> tuple[int, int] | None:
        """A span of speech frames already found (see SpeechTracker.speech_between) within audio
        of `length` samples, padded as `speech_span` pads; None if it is empty."""
        start, end = speech
        if end <= start:
            return None
        pad = int(self.pad_seconds * WHISPER_RATE)
        return max(0, start - pad), min(length, end + pad)


FRAME_SAMPLES = 512  # Silero's frame at 16 kHz
FRAME_SECONDS = FRAME_SAMPLES / WHISPER_RATE
CONTEXT_SAMPLES = 64  # each frame is scored with the end of the one before it
NEG_THRESHOLD_GAP = 0.15  # speech ends below threshold - this (Silero's, faster-whisper's rule)

# How long a pause ends a voice command, per Wyoming's `vad_sensitivity` (Home Assistant's values).
ENDPOINT_SILENCE_SECONDS = {"relaxed": 1.25, "default": 0.7, "aggressive": 0.25}


class SpeechTracker:
    """Speech probabilities for a growing stream, 32 ms frame by frame.

    `push` takes audio as it arrives and scores every complete frame. It runs Silero, so call it
    off the event loop, and from one thread at a time. Silero's recurrent state and frame context
    are carried from one push to the next, so the probabilities are the same as scoring the whole
    stream at once (faster-whisper's wrapper starts from zero state on every call; its ONNX
    session is driven directly here).
    """

    def __init__(self, threshold: float = 0.5, min_speech_seconds: float = 0.25) -> None:
        self.threshold = threshold
        self.min_speech_frames = max(1, round(min_speech_seconds / FRAME_SECONDS))
        self.frames = 0  # frames scored
        self.first_speech_frame: int | None = None  # where the first run of real speech began
        self.last_speech_frame: int | None = None
        self._run = 0  # consecutive speech frames ending at the last frame
        self._probabilities = array("f")  # per frame scored
        self._state = np.zeros((2, 1, 1, 128), dtype=np.float32)  # Silero's LSTM h and c
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)  # less than a frame, not scored yet

    def push(self, audio: np.ndarray) -> None:
        pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        count = len(pending) // FRAME_SAMPLES
        if count == 0:
            self._pending = pending
            return
        frames = pending[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        self._pending = pending[count * FRAME_SAMPLES :]
        contexts = np.concatenate([self._context[np.newaxis], frames[:-1, -CONTEXT_SAMPLES:]])
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        probabilities, h, c = get_vad_model().session.run(
            None,
            {"input": np.concatenate([contexts, frames], axis=1), "h": self._state[0], "c": self._state[1]},
        )
        self._state = np.stack([h, c])
        probabilities = probabilities.reshape(-1)
        self._probabilities.frombytes(probabilities.astype(np.float32).tobytes())
        for probability in probabilities:
            if probability >= self.threshold:
                self._run += 1
                if self._run >= self.min_speech_frames and self.first_speech_frame is None:
                    self.first_speech_frame = self.frames - self._run + 1
                self.last_speech_frame = self.frames
            else:
                self._run = 0
            self.frames += 1

    def speech_between(self, start: int, end: int) -> tuple[int, int]:
        """Samples from the start of the first speech frame to the end of the last within
        [start, end) (samples since the stream began), clipped to it; audio not pushed yet counts
        as speech (the last part-frame pushed, under 32 ms, does not). An empty span if there is
        none. A stream's passes take this instead of scoring their audio again (see
        SpeechGate.padded): Silero over a 10 s buffer costs about 25 ms, each update."""
        if end <= start:
            return start, start
        first_frame, last_frame = start // FRAME_SAMPLES, (end - 1) // FRAME_SAMPLES
        # A copy of the slice: an array exporting its buffer cannot grow, and `push` grows it.
        probabilities = np.frombuffer(self._probabilities[first_frame : last_frame + 1], dtype=np.float32)
        frames = first_frame + np.flatnonzero(probabilities >= self.threshold)
        pushed = self.frames * FRAME_SAMPLES + len(self._pending)
        if not len(frames):
            return (max(start, pushed), end) if end > pushed else (start, start)
        # Speech goes on until the probability falls below the lower threshold, as in the gate.
        after = probabilities[frames[-1] - first_frame :]
        below = np.flatnonzero(after < self.threshold - NEG_THRESHOLD_GAP)
        ending = int(frames[-1]) + (int(below[0]) if len(below) else len(after))
        last = end if end > pushed else ending * FRAME_SAMPLES
        return max(start, int(frames[0]) * FRAME_SAMPLES), min(end, last)

    @property
    def speech_started(self) -> bool:
        """A run of speech long enough not to be a click or a cough has been heard."""
        return self.first_speech_frame is not None

    @property
    def last_speech_end(self) -> float | None:
        """Seconds from the stream start to the end of the last speech frame."""
        return None if self.last_speech_frame is None else (self.last_speech_frame + 1) * FRAME_SECONDS

    @property
    def trailing_silence(self) -> float:
        """Seconds of non-speech since the last speech frame (0 before any speech)."""
        if self.last_speech_frame is None:
            return 0.0
        return (self.frames - self.last_speech_frame - 1) * FRAME_SECONDS

    def ended(self, silence_seconds: float) -> bool:
        """Speech began and has been followed by this much silence: the command is over."""
        return self.speech_started and self.trailing_silence >= silence_seconds
