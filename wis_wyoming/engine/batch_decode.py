"""Several requests' windows decoded in one CTranslate2 call.

faster-whisper decodes one window at a time. On a CPU the decoder is bound by memory traffic,
not arithmetic, so a batch of windows costs little more than one: tiny.en on 2 cores, beam 5,
four windows took 256 ms batched against 440 ms one after another (eight: 409 against 1085).

The batch is optimistic. Each window is encoded alone (its own adaptive window, exactly as the
single path does), then all are decoded together at temperature 0 with the guards they share
(the timestamps every item forbids, the largest token budget). A window whose answer the single
path would not have accepted as is comes back as None and is decoded again on that path: it
needs the temperature fallback, it used a timestamp or more tokens than its own guards allow,
or it stopped before the end of its audio (faster-whisper would decode the rest as another
window). Streaming updates, decoded once at temperature 0 anyway, keep an early stop: their next
pass hears the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens, pad_or_trim

from .encoder_window import WINDOW_FRAMES, WindowedWhisperModel
from .word_times import Word, align_words

# faster-whisper's defaults, which the single path uses too.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1 s
MAX_PROMPT_TOKENS = 223  # faster-whisper keeps at most this much previous text


@dataclass(frozen=True)
class WindowRequest:
    """One window of at most 30 s, with the decoder guards the single path would use."""

    audio: np.ndarray
    prompt: str | None
    guards: dict[str, Any] = field(default_factory=dict)  # suppress_tokens, max_new_tokens, temperature
    word_times: bool = False  # align each word (see word_times)

    @property
    def fallback(self) -> bool:
        return self.guards.get("temperature") != 0.0


@dataclass(frozen=True)
class WindowSegment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] | None = None


@dataclass(frozen=True)
class WindowResult:
    segments: list[WindowSegment]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


def prompt_tokens(model: WindowedWhisperModel, prompt: str | None) -> list[int]:
    """The previous-text tokens faster-whisper would put before the window."""
    if not prompt:
        return []
    return model.hf_tokenizer.encode(" " + prompt.strip(), add_special_tokens=False).ids[-MAX_PROMPT_TOKENS:]


def decode_windows(
    model: WindowedWhisperModel,
    requests: list[WindowRequest],
    language: str,
    task: str,
    beam_size: int,
) -> list[WindowResult | None]:
    """Decode the windows in one batch; None where the single path must decode it instead.

    Every request must have a prompt, or none may: CTranslate2 needs the start of transcript at
    the same position in every prompt, so the previous text is cut to the shortest one's length
    (its most recent words are kept).
    """
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=task, language=language)
    previous = [prompt_tokens(model, r.prompt) for r in requests]
    common = min(len(p) for p in previous)
    prompts = [model.get_prompt(tokenizer, p[len(p) - common :] if common else []) for p in previous]

    mels, frames = [], []
    for request in requests:
        features = model.feature_extractor(request.audio)
        content = min(features.shape[-1] - 1, WINDOW_FRAMES)
        frames.append(content)
        mels.append(pad_or_trim(features[:, :content]))
    encoder_output = _encode(model, mels)

    suppress = [
        set(get_suppressed_tokens(tokenizer, request.guards.get("suppress_tokens", [-1])))
        for request in requests
    ]
    shared_suppress = sorted(set.intersection(*suppress))
    budgets = [r.guards.get("max_new_tokens", model.max_length // 2) for r in requests]
    results = model.model.generate(
        encoder_output,
        prompts,
        beam_size=beam_size,
        patience=1.0,
        length_penalty=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_length=len(prompts[0]) + max(budgets),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=shared_suppress,
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
    )
    accepted = []
    on_host: np.ndarray | None = None
    for index, (request, result, content, own_suppress, budget) in enumerate(
        zip(requests, results, frames, suppress, budgets, strict=True)
    ):
        pieces = _accepted(model, tokenizer, request, result, content, own_suppress, budget)
        if pieces is None:
            accepted.append(None)
            continue
        words: list[list[Word]] | None = None
        if request.word_times and pieces[0]:
            if on_host is None:
                on_host = np.array(_on_host(encoder_output))
            window = ctranslate2.StorageView.from_array(np.ascontiguousarray(on_host[index : index + 1]))
            words = align_words(model, tokenizer, pieces[0], window, content)
        accepted.append(_result(tokenizer, pieces, words))
    return accepted


def _encode(model: WindowedWhisperModel, mels: list[np.ndarray]) -> ctranslate2.StorageView:
    if model.active_window is None:
        return model.encode(np.stack(mels))  # one encoder batch; stays on the device
    # Each window its own length, spliced with silence, as the single path encodes it.
    spliced = [np.array(_on_host(model.encode(mel))) for mel in mels]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(spliced)))


def _on_host(output: ctranslate2.StorageView) -> ctranslate2.StorageView:
    # A window spliced with silence is built in host memory already; a full one may be on the GPU.
    return output if output.device == "cpu" else output.to_device(ctranslate2.Device.cpu)


def _accepted(
    model: WindowedWhisperModel,
    tokenizer: Tokenizer,
    request: WindowRequest,
    result: Any,
    content: int,
    suppress: set[int],
    budget: int,
) -> tuple[list[dict], float, float, float] | None:
    """The window's segments as faster-whisper splits them (dicts), its average log
    probability, no-speech probability and compression ratio; None if the single path must
    decode it."""
    tokens = result.sequences_ids[0]
    if len(tokens) > budget or any(t in suppress for t in tokens):
        return None  # the shared guards let it past its own
    # faster-whisper's average log probability, from the length-normalised score.
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    compression_ratio = get_compression_ratio(tokenizer.decode(tokens).strip())
    low_confidence = avg_logprob < LOG_PROB_THRESHOLD
    silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and low_confidence
    if silent:
        return [], avg_logprob, result.no_speech_prob, compression_ratio
    if request.fallback and (low_confidence or compression_ratio > COMPRESSION_RATIO_THRESHOLD):
        return None
    pieces, next_seek, _ = model._split_segments_by_timestamps(
        tokenizer=tokenizer,
        tokens=tokens,
        time_offset=0.0,
        segment_size=content,
        segment_duration=content * model.feature_extractor.time_per_frame,
        seek=0,
    )
    if request.fallback and next_seek < content:
        return None
    return pieces, avg_logprob, result.no_speech_prob, compression_ratio


def _result(
    tokenizer: Tokenizer, accepted: tuple[list[dict], float, float, float], words: list[list[Word]] | None
) -> WindowResult:
    pieces, avg_logprob, no_speech_prob, compression_ratio = accepted
    segments = []
    for index, piece in enumerate(pieces):
        text = tokenizer.decode(piece["tokens"])
        if piece["start"] != piece["end"] and text.strip():
            timed = tuple(words[index]) if words is not None else None
            segments.append(WindowSegment(piece["start"], piece["end"], text, timed))
    return WindowResult(segments, avg_logprob, no_speech_prob, compression_ratio)
