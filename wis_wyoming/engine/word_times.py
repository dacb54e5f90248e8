"""When each word of a decoded window was said: cross-attention alignment (dynamic time warping).

Whisper's timestamp tokens only bound segments, which run to 10 s or more in read speech; word
times spread over a segment by character count are off by a second or two. Streaming needs
better: to tell the words a pass re-heard from the new ones, and to keep committing while a
sentence goes on. CTranslate2 aligns a window's tokens against its encoder output in one
decoder forward pass (the alignment heads' attention, median-filtered, warped to a monotonic
path); faster-whisper turns that into words, with its fixes for words stretched over pauses.

The alignment is an add-on to a finished decode: the decoded tokens, and so the transcript, are
the same with or without it. (faster-whisper's own `word_timestamps` option also moves where
its next window starts, which changes what is decoded.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import ctranslate2
from faster_whisper.tokenizer import Tokenizer

from .encoder_window import WindowedWhisperModel

# faster-whisper's defaults: punctuation joins the word it belongs to.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
# The longest a word may take: read speech runs at about 15 letters a second; this allows for
# drawn-out words at half that pace.
WORD_SECONDS_BASE = 0.3
WORD_SECONDS_PER_LETTER = 0.12


@dataclass(frozen=True)
class Word:
    start: float  # seconds
    end: float
    text: str  # with its leading space, as Whisper wrote it
    # How sure the decoder was of the word: the mean probability of its tokens, read off the
    # alignment's forward pass (None: not aligned).
    probability: float | None = None


def shifted(words: Iterable[Word], seconds: float) -> list[Word]:
    """The words moved later by `seconds` (from a window's time to the stream's)."""
    return [replace(w, start=w.start + seconds, end=w.end + seconds) for w in words]


def align_words(
    model: WindowedWhisperModel,
    tokenizer: Tokenizer,
    pieces: list[dict[str, Any]],
    encoder_output: ctranslate2.StorageView,
    content_frames: int,
) -> list[list[Word]]:
    """Each piece's words, timed within the window.

    `pieces` are one window's segments as faster-whisper splits them (dicts with "seek",
    "start", "end" and "tokens"); `encoder_output` is that window's, a batch of one;
    `content_frames` its mel frames before padding.
    """
    text_tokens = [t for piece in pieces for t in piece["tokens"] if t < tokenizer.eot]
    if not text_tokens:
        return [[] for _ in pieces]
    copies = [{key: piece[key] for key in ("seek", "start", "end", "tokens")} for piece in pieces]
    model.add_word_timestamps(
        [copies],
        tokenizer,
        encoder_output,
        content_frames,
        PREPEND_PUNCTUATIONS,
        APPEND_PUNCTUATIONS,
        last_speech_timestamp=0.0,
    )
    timed = [
        [
            Word(float(w["start"]), float(w["end"]), w["word"], float(w["probability"]))
            for w in copy.get("words") or ()
        ]
        for copy in copies
    ]
    flat = [word for words in timed for word in words]
    first, last = (flat[0], flat[-1]) if flat else (None, None)
    return [[_bounded(word, word is first, word is last) for word in words] for words in timed]


def in_order(timed: list[list[Word]]) -> list[list[Word]]:
    """Words (grouped by segment) that end no later than the next one starts. A pass decoded as
    two windows is aligned window by window, and the first window's last word can run to the
    end of that window's audio, past the second's first words ("and" 4.96-5.62, "fat"
    7.60-7.60 | "mutton" 5.58-6.14): it is moved back to where the next word starts."""
    flat = [word for words in timed for word in words]
    for i in range(len(flat) - 2, -1, -1):
        word, limit = flat[i], flat[i + 1].start
        if word.end > limit:
            flat[i] = replace(word, start=min(word.start, limit), end=limit)
    ordered, index = [], 0
    for words in timed:
        ordered.append(flat[index : index + len(words)])
        index += len(words)
    return ordered


def _bounded(word: Word, first: bool, last: bool) -> Word:
    """The warping path has to cover every frame, so audio the decoder left out goes to a
    neighbour: the first word starts with any speech skipped before it, the last one runs on
    over a segment Whisper did not finish ("a word." ending two seconds late, over "He
    hoped..."). A word is given at most a generous speaking time for its letters; the first
    word is cut at its start, any other at its end."""
    letters = sum(c.isalnum() for c in word.text)
    longest = WORD_SECONDS_BASE + WORD_SECONDS_PER_LETTER * letters
    if word.end - word.start <= longest:
        return word
    if first and not last:
        return replace(word, start=word.end - longest)
    return replace(word, end=word.start + longest)
