"""base's draft updates: the speech and a learned hush, not Whisper's padded 30 s window.

Whole requests, voice commands, pauses and the end keep the padded window (the hush fails the
issue's WER gate on whole commands); drafts serve the updates of longer speech, which commit only
what the next pass agrees with.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import jiwer
import numpy as np
from whisper_normalizer.english import EnglishTextNormalizer

from wis_wyoming.engine.asr import WHISPER_MAX_TOKENS, PassKind, TranscriptionOptions
from wis_wyoming.engine.audio import decode_file
from wis_wyoming.engine.batch_decode import MAX_PROMPT_TOKENS
from wis_wyoming.engine.hush import hush_for
from wis_wyoming.engine.models import ModelRegistry
from wis_wyoming.engine.streaming import StreamingPolicy, StreamResult, TranscriptStream

from .conftest import push_in_real_time, reference_text, speech

normalise = EnglishTextNormalizer()
COMMAND = "commands/is_the_Front_Door_locked.wav"
LONGFORM = "longform/librispeech_test-clean_20utt_concat.wav"


def model_dir(cache_dir: Path, name: str) -> Path:
    path = ModelRegistry(cache_dir, local_files_only=True).resolve(name).path
    assert path is not None
    return path


def test_a_hush_is_used_only_with_the_weights_it_was_trained_on(cache_dir, tmp_path):
    base = model_dir(cache_dir, "base")
    assert hush_for(base) is not None
    assert hush_for(model_dir(cache_dir, "tiny.en")) is None
    # Same size, other bytes: not the same model.
    other = tmp_path / "other-base"
    other.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy(base / name, other / name)
    with (other / "model.bin").open("wb") as weights:
        weights.truncate((base / "model.bin").stat().st_size)
    assert hush_for(other) is None


def encoder_positions(whisper, audio: np.ndarray, update: bool) -> tuple[int, str]:
    """Decode greedily as an update or not; the encoder positions the decoder saw, and the text."""
    with whisper.updating(update), whisper.recording_windows() as windows:
        guards = whisper.decoder_guards(len(audio) / 16000)
        segments, _ = whisper.transcribe(audio, language="en", beam_size=1, temperature=0.0, **guards)
        text = "".join(s.text for s in segments)
    encoded, _ = windows[0]
    return encoded.shape[1], text


async def test_base_updates_encode_the_speech_and_the_hush_and_answers_the_padded_window(server):
    resident, _ = await server.engine.prepare(TranscriptionOptions(model="base", language="en"))
    whisper = resident.whisper
    assert whisper.window is None and whisper.update_window is not None
    assert whisper.update_window.hush is not None
    audio = decode_file(speech(COMMAND))

    update_positions, update_text = encoder_positions(whisper, audio, update=True)
    answer_positions, answer_text = encoder_positions(whisper, audio, update=False)

    # 100 mel frames are 50 encoder positions: the speech and the hush, nothing more.
    hush_positions = whisper.update_window.hush.shape[1] // 2
    assert update_positions <= (len(audio) // 160 + 1) // 2 + hush_positions + 1
    assert answer_positions == 1500
    # And the update stops at the end of the speech: the whole command, nothing after it.
    assert normalise(update_text) == normalise(answer_text) == normalise(reference_text(speech(COMMAND)))


async def stream_on_base(
    server, audio: np.ndarray, policy: StreamingPolicy | None = None
) -> tuple[StreamResult, list[str]]:
    """Stream audio to base in real time, greedily; the result and the pieces committed."""
    resident, request = await server.engine.prepare(TranscriptionOptions(model="base", language="en"))
    sent: list[str] = []

    async def on_commit(text: str) -> None:
        sent.append(text)

    stream = TranscriptStream(server.engine, resident, replace(request, beam_size=1), policy, on_commit)
    await push_in_real_time(stream, audio)
    return await stream.finish(), sent


async def test_base_streams_long_speech_on_hushed_updates_without_copying_its_prompt(server):
    """Passes after a trim have the committed text as their prompt; with spliced silence instead
    of the hush, base's updates copied it ("He hoped there would be stew for dinner. He hoped
    there would be stew for"). 30 s of long-form speech in real time."""
    audio = decode_file(speech(LONGFORM))[: 30 * 16000]
    # Drafts however fast base's own window is (see StreamingPolicy.draft_above_seconds).
    result, sent = await stream_on_base(server, audio, StreamingPolicy(draft_above_seconds=0.0))
    offline = await server.engine.transcribe(audio, TranscriptionOptions(model="base", language="en"))

    assert result.stats.trims >= 1 and len(sent) > 5 and result.stats.draft_passes > 0
    assert "".join(sent) == result.text
    assert jiwer.wer(normalise(offline.text), normalise(result.text)) < 0.1


async def test_long_speech_updates_on_the_models_own_window_where_it_is_as_fast_as_drafts(server):
    """Drafts cost accuracy (base on test-other: 8.7-12.2 % streamed WER against 6.5-8.7 % on its
    own window, 5.97 % offline); they only pay where the own window is slow. A policy that finds
    any speed fast enough keeps every update on base's padded window."""
    audio = decode_file(speech(LONGFORM))[: 12 * 16000]
    result, sent = await stream_on_base(server, audio, StreamingPolicy(draft_above_seconds=60.0))
    offline = await server.engine.transcribe(audio, TranscriptionOptions(model="base", language="en"))

    assert result.stats.passes >= 5 and result.stats.draft_passes == 0
    assert "".join(sent) == result.text
    assert jiwer.wer(normalise(offline.text), normalise(result.text)) < 0.1


async def test_a_greedy_pass_says_whether_whisper_would_have_fallen_back(server):
    """A pause pass is decoded once, greedily; its words are the answer only if faster-whisper
    would have kept them (the temperature fallback took seconds with base mid-stream)."""
    resident, request = await server.engine.prepare(TranscriptionOptions(model="base", language="en"))
    clear = decode_file(speech(COMMAND))
    reversed_speech = decode_file(speech("misc/LJ001-0001.wav"))[::-1].copy()  # base loops on it

    understood = await server.engine.decode(resident, clear, request, kind=PassKind.GREEDY)
    gibberish = await server.engine.decode(resident, reversed_speech, request, kind=PassKind.GREEDY)

    assert understood is not None and understood.confident
    assert gibberish is not None and gibberish.text.strip() and not gibberish.confident


async def test_a_padded_pass_with_a_prompt_leaves_room_for_a_second_window(server):
    """faster-whisper refuses a window whose prompt and token budget exceed Whisper's 448 tokens,
    and a window it decodes after the first in the same call has up to 223 previous tokens."""
    resident, _ = await server.engine.prepare(TranscriptionOptions(model="base", language="en"))
    context = "the committed words of a long dictation " * 10
    for kind in PassKind:
        guards = resident._guards(20.0, context, kind)
        assert guards["max_new_tokens"] + MAX_PROMPT_TOKENS + 4 <= WHISPER_MAX_TOKENS


async def test_base_streams_a_voice_command_on_its_own_window_not_drafts(server):
    """Draft updates on the hush guessed at a command's first second and two agreed on it ("So
    time for three hours"); a command streams on base's own window and comes out as offline.
    (Two greedy updates over its first second and a half, on that window, still agreed on "So"
    for "Set" until no pass over less than two seconds of speech could commit.)"""
    audio = decode_file(speech("commands/set_a_timer_for_3_hours_and_10_minutes.wav"))
    result, sent = await stream_on_base(server, audio)
    offline = await server.engine.transcribe(
        audio, TranscriptionOptions(model="base", language="en", beam_size=1)
    )

    assert result.stats.passes >= 3 and result.stats.draft_passes == 0
    assert "".join(sent) == result.text
    assert jiwer.wer(normalise(offline.text), normalise(result.text)) <= 1 / 8
