"""A Piper voice cut at its decoder: chunked audio equals whole audio, and loudness is steady."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from wis_wyoming.engine.hardware import plan_compute
from wis_wyoming.engine.piper_stream import CHUNK_FRAMES, MIN_LAST_FRAMES, SplitPiper, chunk_bounds
from wis_wyoming.engine.speech_text import SpeechPart
from wis_wyoming.engine.tts import SynthesisOptions, TtsEngine
from wis_wyoming.engine.voices import bundled_voice_files

# Without noise the prelude is deterministic, so two runs can be compared sample for sample.
SILENT_NOISE = {"length_scale": None, "noise_scale": 0.0, "noise_w_scale": 0.0}
SENTENCES = [
    "The kitchen lights are on, and the front door is locked for the night.",
    "It is seventy two degrees inside.",
    "Okay.",
    "Good morning! The weather today is sunny with a high of twenty four.",
]


@pytest.fixture(scope="module")
def piper() -> SplitPiper:
    files = bundled_voice_files()
    assert files is not None, "the bundled voice is a dependency"
    model, config = files
    return SplitPiper(model, json.loads(config.read_text()), plan_compute("cpu"))


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.int32)


def test_the_bundled_voice_is_cut_at_its_decoder(piper):
    assert piper.cut is not None and piper.decoder is not None
    assert piper.cut.latent in piper.cut.decoder_inputs


@pytest.mark.parametrize("text", SENTENCES)
def test_audio_decoded_chunk_by_chunk_equals_audio_decoded_whole(piper, text):
    for latent in piper.latents(text, None, **SILENT_NOISE):
        whole = samples(piper.decode(latent, 0, latent.frames))
        chunked = samples(b"".join(piper.decode(latent, *bounds) for bounds in chunk_bounds(latent.frames)))
        assert len(chunked) == len(whole) == latent.frames * piper.hop
        assert np.abs(chunked - whole).max() <= 2, "chunk seams must not be audible (a few LSB at most)"


def test_chunks_start_small_cover_every_frame_and_never_end_short():
    for frames in (1, 15, 16, 40, 64, 97, 250, 1000):
        bounds = chunk_bounds(frames)
        assert bounds[0][0] == 0 and bounds[-1][1] == frames
        assert all(end == start for (_, end), (start, _) in itertools.pairwise(bounds))
        assert bounds[0][1] - bounds[0][0] <= max(CHUNK_FRAMES[0], MIN_LAST_FRAMES + CHUNK_FRAMES[0])
        if len(bounds) > 1:
            assert bounds[-1][1] - bounds[-1][0] >= MIN_LAST_FRAMES


def test_every_sentence_comes_out_near_one_loudness_without_clipping(piper):
    levels = []
    for text in SENTENCES:
        audio = np.concatenate(
            [
                samples(piper.decode(latent, 0, latent.frames))
                for latent in piper.latents(text, None, **SILENT_NOISE)
            ]
        )
        assert np.abs(audio).max() < 32767, "the soft limit keeps peaks below full scale"
        levels.append(20 * np.log10(np.sqrt(np.mean((audio / 32767.0) ** 2))))
    # Piper's own peak normalisation spreads these sentences over several dB; one gain per voice
    # keeps them near -20 dBFS.
    assert all(-25 < level < -15 for level in levels), levels
    assert max(levels) - min(levels) < 5, levels


async def test_a_replys_opening_part_streams_in_pieces_and_later_parts_come_whole(server):
    engine = TtsEngine(server.tts.catalogue, server.tts.plan)  # no cache: every part is made
    options = SynthesisOptions(noise_scale=0.0, noise_w_scale=0.0, use_cache=False)
    opening = SpeechPart(SENTENCES[0], False, False, opens=True)
    later = SpeechPart(SENTENCES[0], True, False)
    try:
        opening_pieces = [piece async for piece in engine.stream_part(opening, options)]
        later_pieces = [piece async for piece in engine.stream_part(later, options)]
        whole = await engine.speak_part(opening, options)
    finally:
        await engine.close()
    rate = whole.rate
    assert len(opening_pieces) >= 3 and len(later_pieces) == 1
    first_seconds = len(opening_pieces[0].pcm) / 2 / rate
    assert first_seconds <= (CHUNK_FRAMES[0] + 1) * 256 / rate, "the first piece is one small chunk"
    joined = samples(b"".join(piece.pcm for piece in opening_pieces))
    assert np.abs(joined - samples(whole.pcm)).max() <= 2
    silence = round(options.sentence_silence * rate)
    assert np.abs(samples(later_pieces[0].pcm)[silence:] - joined).max() <= 2
