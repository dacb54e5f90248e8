"""Encode only what was spoken: the adaptive encoder window.

Whisper's encoder always takes 30 s (3000 mel frames), so faster-whisper pads a 3 s command with
27 s of silence and pays the encoder for all of it. CTranslate2 accepts shorter inputs, but a
decoder that cross-attends to fewer positions than it was trained on runs on and repeats itself
("Lock the front door. Lock the front door. ..."). So the spoken frames alone are encoded (in
bucketed lengths, so shapes repeat), and the encoder output of silence, computed once per model,
fills the remaining positions (WhisperKit's idea): the decoder still sees 1500 positions.
(Tried: splicing silence only up to 20 s, 1000 positions. Each decoded token attends to fewer,
so tiny.en's final pass over WIS's 10 s clip's 2.6 s tail took 55 ms against 61, with the same
WER on shared/speech; at 10 s the decoder ran on over misc clips. But it moved Whisper's commas,
and with them the clause ends where streaming cuts the final pass: on WIS's 30 s clip it then
decoded 8.7 s instead of 2 s, 151-167 ms against 87 after the body.)

Language detection is the exception: spliced silence pulls it towards English (base, on the
multilingual clips: "en" at p=0.45-0.63 for German, Spanish, Japanese...), while the plain
truncated window detects like the padded one (de 1.00, es 1.00, ja 1.00, fr 0.98). So detection
encodes the truncated window, and only decoding gets the splice.

Guards keep the decoder inside the audio: timestamp tokens past the end of the audio are
suppressed and the token budget follows the duration. Measured on shared/speech (librispeech,
commands, misc, 137 clips) with tiny.en int8 on 2 cores, greedy decoding: WER 13.35 % against
13.90 % padded, in half the time; on commands alone about 0.25x the compute per clip. (With
Whisper's temperature fallback, which samples, both paths move by up to a point between runs.)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.transcribe import get_ctranslate2_storage

WINDOW_FRAMES = 3000  # 30 s of 10 ms mel frames: what Whisper was trained on
SECONDS_PER_TIMESTAMP = 0.02
# Room for faster-whisper's prompt (at most 223 previous tokens plus the start sequence) within
# Whisper's 448-token decoder context.
MAX_NEW_TOKENS = 200
# A window's decode that stops this close to the end of the audio has heard it all: what is left
# is the gate's trailing pad (0.6 s of silence after the speech), not a word.
MIN_TAIL_FRAMES = 30
EncodedWindow = tuple[ctranslate2.StorageView, int]  # encoder output, content frames


class PassAbandoned(Exception):
    """A decode stopped between its stages: nobody wanted its answer any more (see
    WindowedWhisperModel.abandonable)."""


@dataclass(frozen=True)
class EncoderWindow:
    """How many frames to encode for a given amount of speech."""

    min_frames: int = 200
    bucket_frames: int = 100
    margin_frames: int = 100  # silence kept after the speech, as the decoder's cue that it ended
    # A learned hush (see hush), (80, N) log-mel frames: encoded right after the speech instead of
    # the margin and the spliced silence, so the decoder attends to the speech and the hush only.
    hush: np.ndarray | None = field(default=None, compare=False, repr=False)

    def frames_for(self, content_frames: int, limit: int = WINDOW_FRAMES) -> int:
        wanted = math.ceil((content_frames + self.margin_frames) / self.bucket_frames) * self.bucket_frames
        return min(limit, max(self.min_frames, wanted))


def _with_hush(mel: np.ndarray, content: int, hush: np.ndarray) -> np.ndarray:
    """The spoken frames, then the hush; no padding (the encoder takes an even length)."""
    spoken = mel[:, :content]
    odd = (spoken.shape[1] + hush.shape[1]) % 2
    parts = [spoken, np.zeros((mel.shape[0], odd), mel.dtype), hush.astype(mel.dtype)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def content_frames(features: np.ndarray) -> int:
    """Frames before faster-whisper's padding, which is exact zeros (speech never is, column-wide)."""
    spoken = np.flatnonzero(np.any(features != 0, axis=0))
    return int(spoken[-1]) + 1 if len(spoken) else 0


class WindowedWhisperModel(WhisperModel):
    """A WhisperModel whose encoder runs only over the spoken part of each 30 s window.

    On a CPU the encoder may run on an instance of its own (`encoder_threads`): the encoder is
    one large matrix product per layer and splits well over cores, while the decoder steps one
    token at a time through small products, for which CTranslate2's threads cost more in
    hand-offs than they gain (tiny.en int8 on 2 cores, per token: 4.7 ms on one thread, 6.6 ms
    on two; beam 5: 7.3 against 12.1 ms). So the decoder instance runs one thread per replica,
    its replicas (sharing their weights) decode side by side, and the encoder keeps all cores.
    The price is a second copy of the weights.
    """

    def __init__(
        self,
        model_path: str,
        *args: Any,
        window: EncoderWindow | None = None,
        update_window: EncoderWindow | None = None,
        encoder_threads: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_path, *args, **kwargs)
        self.window = window
        # Streaming drafts may take a window whole requests do not (see `updating` and
        # asr.PassKind.DRAFT): a draft's words count only once the next pass agrees with them.
        self.update_window = update_window or window
        self.encoder = self.model
        if encoder_threads and self.model.device == "cpu":
            self.encoder = ctranslate2.models.Whisper(
                model_path,
                device="cpu",
                compute_type=kwargs.get("compute_type", "default"),
                intra_threads=encoder_threads,
            )
        self._silence: np.ndarray | None = None
        self._silence_lock = threading.Lock()
        self._detecting = threading.local()
        self._updating = threading.local()
        self._recording = threading.local()  # encoder outputs kept for word alignment
        self._abandoned = threading.local()
        self._timestamp_begin = self.hf_tokenizer.token_to_id("<|notimestamps|>") + 1

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        self._detecting.active = True
        try:
            return super().detect_language(*args, **kwargs)
        finally:
            self._detecting.active = False

    @contextmanager
    def updating(self, active: bool = True) -> Iterator[None]:
        """Encode and guard the calls made on this thread in the block on the update window."""
        self._updating.active = active
        try:
            yield
        finally:
            self._updating.active = False

    @contextmanager
    def abandonable(self, abandoned: Callable[[], bool]) -> Iterator[None]:
        """The decode on this thread in the block stops at its next stage (an encode, each window
        having its own; an alignment) once `abandoned()` says so, raising PassAbandoned.
        CTranslate2 cannot stop a call it has begun, but a streaming update superseded by the end
        of the audio would otherwise hold a core for its remaining stages while the final pass
        runs (tiny.en over a 10 s buffer: encode 55, generate 220, align 40 ms)."""
        self._abandoned.check = abandoned
        try:
            yield
        finally:
            self._abandoned.check = None

    def stop_if_abandoned(self) -> None:
        check = getattr(self._abandoned, "check", None)
        if check is not None and check():
            raise PassAbandoned

    @property
    def active_window(self) -> EncoderWindow | None:
        """The window of the calls on this thread: None encodes Whisper's padded 30 s."""
        return self.update_window if getattr(self._updating, "active", False) else self.window

    @contextmanager
    def recording_windows(self, active: bool = True) -> Iterator[dict[int, EncodedWindow]]:
        """Collect, on this thread, each window decoded in the block: its seek (first frame) ->
        (encoder output, content frames), so words can be aligned against exactly what the
        decoder saw. Inactive, nothing is kept (an hour-long file has 120 windows)."""
        windows: dict[int, EncodedWindow] = {}
        self._recording.windows = windows if active else None
        self._recording.encoded = None
        try:
            yield windows
        finally:
            self._recording.windows = self._recording.encoded = None

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        self.stop_if_abandoned()
        output = self._encode_window(features)
        if getattr(self._recording, "windows", None) is not None and not getattr(
            self._detecting, "active", False
        ):
            self._recording.encoded = output  # the window being decoded; see the split below
        return output

    def _encode_window(self, features: np.ndarray) -> ctranslate2.StorageView:
        window = self.active_window
        if window is None or (features.ndim == 3 and features.shape[0] != 1):
            return self._encode_whole(features)
        mel = features if features.ndim == 2 else features[0]
        content = content_frames(mel)
        frames = window.frames_for(content, mel.shape[-1])
        if frames >= mel.shape[-1]:
            return self._encode_whole(mel)
        if getattr(self._detecting, "active", False):
            return self._encode_whole(np.ascontiguousarray(mel[:, :frames]))
        if window.hush is not None:
            return self._encode_whole(_with_hush(mel, content, window.hush))
        head = self._encode_on_cpu(mel[:, :frames])
        silence = self._silence_output(mel.shape)
        spliced = np.concatenate([head, silence[:, head.shape[1] :]], axis=1)
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(spliced))

    def decoder_guards(self, duration: float) -> dict[str, Any]:
        """faster-whisper options that stop the decoder at the end of audio up to 30 s long."""
        if self.active_window is None or duration > WINDOW_FRAMES / 100:
            return {}
        first_past_end = self._timestamp_begin + math.ceil(duration / SECONDS_PER_TIMESTAMP) + 1
        last = self._timestamp_begin + int(WINDOW_FRAMES / 100 / SECONDS_PER_TIMESTAMP)
        return {
            # -1 keeps faster-whisper's default set (non-speech symbols).
            "suppress_tokens": [-1, *range(first_past_end, last + 1)],
            "max_new_tokens": min(MAX_NEW_TOKENS, int(20 + 12 * duration)),
        }

    def _split_segments_by_timestamps(
        self,
        tokenizer: Any,
        tokens: list[int],
        time_offset: float,
        segment_size: int,
        segment_duration: float,
        seek: int,
    ) -> tuple[list[dict], int, bool]:
        """faster-whisper's split of a window's tokens into segments, and where to seek next.

        When a decode ends on a pair of timestamps, faster-whisper seeks to the last one and
        decodes what remains as a window of its own, however little that is. A sliver of a few
        frames is nearly empty input: greedy decoding gives up on it, and the temperature
        fallback then samples text that was never said, now and then with a good enough
        probability to be kept (tiny.en on librispeech 8463-287645-0007, 0.02 s left: "In a
        rage, she fell asleep in the window, and she fell", one run in three). A sliver at the
        end of the audio is taken as heard.
        """
        segments, next_seek, single_timestamp_ending = super()._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=tokens,
            time_offset=time_offset,
            segment_size=segment_size,
            segment_duration=segment_duration,
            seek=seek,
        )
        if getattr(self._recording, "windows", None) is not None and self._recording.encoded is not None:
            # faster-whisper splits each window once, after encoding and decoding it.
            self._recording.windows[seek] = (self._recording.encoded, segment_size)
        window_end = seek + segment_size
        at_audio_end = segment_size < self.feature_extractor.nb_max_frames
        if at_audio_end and 0 < window_end - next_seek < MIN_TAIL_FRAMES:
            next_seek = window_end
        return segments, next_seek, single_timestamp_ending

    def _encode_whole(self, features: np.ndarray) -> ctranslate2.StorageView:
        """faster-whisper's encode, on the encoder instance."""
        # With several GPUs, the next job may run on another one.
        to_cpu = self.model.device == "cuda" and len(self.model.device_index) > 1
        batch = features if features.ndim == 3 else features[np.newaxis]
        return self.encoder.encode(get_ctranslate2_storage(batch), to_cpu=to_cpu)

    def _encode_on_cpu(self, mel: np.ndarray) -> np.ndarray:
        # Splicing happens in host memory; on a GPU only the short head crosses the bus, and
        # generate() moves the spliced output back.
        batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[np.newaxis]))
        return np.array(self.encoder.encode(batch, to_cpu=True))

    def _silence_output(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._silence_lock:
            if self._silence is None:
                self._silence = self._encode_on_cpu(np.zeros(shape, dtype=np.float32))
            return self._silence
