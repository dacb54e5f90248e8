"""The adaptive encoder window: window sizes, decoder guards and the WER gate against padding."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
from faster_whisper.tokenizer import Tokenizer
from whisper_normalizer.english import EnglishTextNormalizer

from wis_wyoming.engine.audio import decode_file
from wis_wyoming.engine.encoder_window import EncoderWindow, WindowedWhisperModel, content_frames
from wis_wyoming.engine.models import ModelRegistry
from wis_wyoming.engine.vad import SpeechGate

from .conftest import corpus, reference_text, speech

normalise = EnglishTextNormalizer()
GATE_POINTS = 0.003  # the gate: adaptive may not be worse than padded by more than 0.3


def test_window_covers_the_speech_plus_a_margin_in_buckets():
    window = EncoderWindow(min_frames=200, bucket_frames=100, margin_frames=100)
    assert window.frames_for(0) == 200
    assert window.frames_for(250) == 400  # 250 + 100 margin, rounded up to the bucket
    assert window.frames_for(2950) == 3000  # never more than Whisper's 30 s
    assert window.frames_for(1234, limit=1000) == 1000


def test_content_ends_where_faster_whispers_zero_padding_starts():
    features = np.zeros((80, 3000), dtype=np.float32)
    features[:, :437] = np.random.default_rng(0).normal(size=(80, 437))
    assert content_frames(features) == 437
    assert content_frames(np.zeros((80, 3000), dtype=np.float32)) == 0


@pytest.fixture(scope="module")
def windowed_tiny(cache_dir):
    path = ModelRegistry(cache_dir, local_files_only=True).resolve("tiny.en").path
    return WindowedWhisperModel(str(path), window=EncoderWindow(), device="cpu", compute_type="int8")


def test_decoder_guards_forbid_timestamps_past_the_end(windowed_tiny):
    guards = windowed_tiny.decoder_guards(2.0)
    timestamp_begin = Tokenizer(windowed_tiny.hf_tokenizer, multilingual=False).timestamp_begin
    suppressed = set(guards["suppress_tokens"])
    assert -1 in suppressed  # faster-whisper's default set stays
    assert timestamp_begin + 100 not in suppressed  # <|2.00|>: the end itself is allowed
    assert timestamp_begin + 102 in suppressed and timestamp_begin + 1500 in suppressed
    assert guards["max_new_tokens"] == 44
    assert windowed_tiny.decoder_guards(31.0) == {}  # several windows: faster-whisper's own rules


def test_windowed_model_transcribes_a_short_command_without_running_on(windowed_tiny):
    audio = decode_file(speech("commands/lock_the_Front_Door.wav"))
    segments, _ = windowed_tiny.transcribe(
        audio, beam_size=1, language="en", **windowed_tiny.decoder_guards(2.1)
    )
    text = "".join(s.text for s in segments)
    assert normalise(text) == "lock the front door"


def test_a_sliver_left_after_the_last_timestamp_is_not_decoded_as_a_window(windowed_tiny, monkeypatch):
    """The decode of this clip (speech trimmed as the engine does) ends 0.02 s before the audio
    does; decoding those 2 frames as a second window made up a sentence now and then."""
    audio = decode_file(speech("librispeech/8463-287645-0007.wav"))
    start, end = SpeechGate().speech_span(audio)
    audio = audio[start:end]
    windows = []
    decode_window = windowed_tiny.generate_with_fallback

    def counted(*args, **kwargs):
        windows.append(decode_window(*args, **kwargs))
        return windows[-1]

    monkeypatch.setattr(windowed_tiny, "generate_with_fallback", counted)
    segments, _ = windowed_tiny.transcribe(
        audio, beam_size=5, language="en", **windowed_tiny.decoder_guards(len(audio) / 16000)
    )
    text = "".join(s.text for s in segments)
    assert len(windows) == 1
    assert normalise(text).endswith("died in a few hours from the effects thereof")


def test_adaptive_window_passes_the_wer_gate_against_the_padded_path(windowed_tiny):
    """librispeech + commands + misc with tiny.en: adaptive within 0.3 points of padded.

    Decoding is greedy at temperature 0 on both paths: Whisper's temperature fallback samples at
    random and moves misc by several points between identical runs, which would drown the window's
    own effect (bench/encoder_window.py measures the full fallback path).
    """
    clips = corpus("librispeech") + corpus("commands") + corpus("misc")
    audios = [decode_file(clip) for clip in clips]
    references = [normalise(reference_text(clip)) for clip in clips]
    results = {}
    window = windowed_tiny.window
    try:
        for mode, setting in (("padded", None), ("adaptive", window)):
            windowed_tiny.window = setting
            texts = []
            for audio in audios:
                guards = windowed_tiny.decoder_guards(len(audio) / 16000)
                segments, _ = windowed_tiny.transcribe(
                    audio, beam_size=1, language="en", temperature=0.0, **guards
                )
                texts.append(normalise("".join(s.text for s in segments)) or "<empty>")
            results[mode] = jiwer.wer(references, texts)
    finally:
        windowed_tiny.window = window
    print(f"WER padded {results['padded']:.2%}, adaptive {results['adaptive']:.2%} on {len(clips)} clips")
    assert results["adaptive"] <= results["padded"] + GATE_POINTS


async def test_auto_window_is_adaptive_for_english_only_models_and_for_base_updates_only(server):
    tiny = server.engine.resident["tiny.en"].whisper
    assert tiny.window is not None and tiny.update_window is tiny.window
    base = server.engine.resident["base"].whisper
    assert base.window is None  # whole requests, pauses and the end: padded
    assert base.update_window is not None and base.update_window.hush is not None  # see test_hush
