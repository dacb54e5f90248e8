"""Word times aligned by cross-attention: where each word was said, without changing the words."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from wis_wyoming.engine.asr import Decoded, TranscriptionOptions
from wis_wyoming.engine.audio import WHISPER_RATE, decode_file
from wis_wyoming.engine.word_times import Word, _bounded, in_order

from .conftest import speech

LONGFORM = speech("longform/librispeech_test-clean_20utt_concat.wav")
# The first two utterances of the long-form file (0.000-4.905 s and 5.305-13.765 s in its
# segments.tsv), and where their speech is, read off the waveform's energy in 0.1 s steps.
FIRST_END, SECOND_END = 4.905, 13.765
FIRST_SPEECH_END, SECOND_SPEECH_START, SECOND_SPEECH_END = 4.85, 5.5, 13.25
TOLERANCE = 0.4  # seconds: tiny.en's attention heads place words to a few frames


def words_of(decoded: Decoded) -> list[Word]:
    return [word for segment in decoded.segments for word in segment.words or ()]


async def decode(server, audio, word_times: bool, optional: bool = False) -> Decoded:
    resident, request = await server.engine.prepare(TranscriptionOptions(model="tiny.en"))
    decoded = await server.engine.decode(
        resident, audio, replace(request, beam_size=1), optional=optional, word_times=word_times
    )
    assert decoded is not None
    return decoded


async def test_aligned_words_fall_on_the_utterance_boundaries(server):
    audio = decode_file(LONGFORM)[: int((SECOND_END + 0.3) * WHISPER_RATE)]
    decoded = await decode(server, audio, word_times=True)
    words = words_of(decoded)
    assert all(segment.words for segment in decoded.segments)
    assert "".join(w.text for w in words) == decoded.text
    assert all(a.start <= a.end <= b.start + 0.01 for a, b in itertools.pairwise(words))
    # Each word carries how sure the decoder was of it; of clean read speech, mostly sure.
    probabilities = [w.probability for w in words]
    assert all(p is not None and 0.0 < p <= 1.0 for p in probabilities)
    assert sorted(probabilities)[len(probabilities) // 2] > 0.8
    # "... on the left." | pause | "Also a popular contrivance ..."
    last_of_first = next(w for w in words if w.text.strip(" .").lower() == "left")
    first_of_second = words[words.index(last_of_first) + 1]
    assert abs(last_of_first.end - FIRST_SPEECH_END) < TOLERANCE
    assert abs(first_of_second.start - SECOND_SPEECH_START) < TOLERANCE
    assert abs(words[-1].end - SECOND_SPEECH_END) < TOLERANCE


async def test_word_times_do_not_change_the_transcript(server):
    audio = decode_file(LONGFORM)[: int((SECOND_END + 0.3) * WHISPER_RATE)]
    with_times = await decode(server, audio, word_times=True)
    without = await decode(server, audio, word_times=False)
    assert with_times.text == without.text
    assert all(segment.words is None for segment in without.segments)


async def test_batched_passes_are_aligned_too(server):
    """Several streaming updates decoded in one call still get their own word times."""
    full = decode_file(LONGFORM)
    second = full[int(5.0 * WHISPER_RATE) : int(SECOND_END * WHISPER_RATE)]
    pieces = [full[: int(FIRST_END * WHISPER_RATE)], second]
    scheduler = server.engine.resident["tiny.en"].scheduler
    batches, jobs = scheduler.batches, scheduler.batched_jobs
    decoded = await asyncio.gather(*(decode(server, piece, True, optional=True) for piece in pieces * 2))
    assert scheduler.batched_jobs - jobs == len(decoded)
    assert scheduler.batches - batches < len(decoded)
    for answer, piece in zip(decoded, pieces * 2, strict=True):
        words = words_of(answer)
        assert words and "".join(w.text for w in words) == answer.text
        assert words[0].start >= 0 and words[-1].end <= len(piece) / WHISPER_RATE + 0.1


@pytest.mark.parametrize(
    ("word", "first", "last", "expected"),
    [
        # The last word ran on over speech the decoder left out: its end is pulled in.
        (Word(4.5, 7.0, " left."), False, True, Word(4.5, 4.5 + 0.3 + 0.12 * 4, " left.")),
        # The first word took the skipped speech before it: its start is pulled in.
        (Word(0.0, 3.0, " They"), True, False, Word(3.0 - 0.3 - 0.12 * 4, 3.0, " They")),
        # A word of ordinary length is left as it is.
        (Word(1.0, 1.4, " door"), False, False, Word(1.0, 1.4, " door")),
    ],
)
def test_words_stretched_over_unspoken_audio_are_bounded(word, first, last, expected):
    bounded = _bounded(word, first, last)
    assert bounded.text == expected.text
    assert bounded.start == pytest.approx(expected.start) and bounded.end == pytest.approx(expected.end)


def test_a_word_aligned_past_the_next_window_is_moved_back_before_it():
    # tiny.en, librispeech 1089-134686-0000 streamed at 1.5x: a pass decoded in two windows, the
    # first's last word aligned to the end of that window's audio.
    segments = [
        [Word(4.96, 5.62, " and"), Word(7.6, 7.6, " fat")],
        [Word(5.6, 6.16, " mutton"), Word(6.16, 6.48, " pieces")],
    ]
    ordered = in_order(segments)
    assert [len(words) for words in ordered] == [2, 2]
    flat = [word for words in ordered for word in words]
    assert [w.text for w in flat] == [" and", " fat", " mutton", " pieces"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(flat))
    assert flat[1] == Word(5.6, 5.6, " fat") and flat[2:] == segments[1]
