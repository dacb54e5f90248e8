"""The TTS disk cache: hits, the size bound, corrupt entries and restarts, with real Piper audio."""

from __future__ import annotations

import pytest

from wis_wyoming.engine.tts import SynthesisOptions, TtsEngine
from wis_wyoming.engine.tts_cache import SUFFIX, TtsCache


@pytest.fixture
def engine_with_cache(server, tmp_path):
    """The server's voices and plan, with a cache of its own in a fresh directory."""

    def make(max_bytes: int = 64 << 20) -> TtsEngine:
        return TtsEngine(server.tts.catalogue, server.tts.plan, TtsCache(tmp_path / "tts", max_bytes))

    return make


async def say(engine: TtsEngine, text: str):
    """Each sentence in one part (no quick start): one cache entry per sentence."""
    return [part async for part in engine.speak(text, SynthesisOptions(quick_start=False))]


async def test_a_hit_returns_the_same_audio_in_milliseconds(engine_with_cache):
    engine = engine_with_cache()
    try:
        (first,) = await say(engine, "The front door is locked.")
        (again,) = await say(engine, "The front door is locked.")
    finally:
        await engine.close()
    assert not first.cached and again.cached
    assert again.pcm == first.pcm
    # Not a speed target (those live in bench/): a hit must not have gone through Piper at all.
    assert again.seconds < first.seconds


async def test_the_least_recently_used_sentences_are_evicted_past_the_bound(engine_with_cache):
    engine = engine_with_cache()
    cache = engine.cache
    assert cache is not None
    try:
        texts = ["One light is on.", "Two lights are on.", "Three lights are on.", "Four lights are on."]
        for text in texts[:3]:
            await say(engine, text)
        await say(engine, texts[0])  # used again: the second sentence is now the least recent
        cache.max_bytes = cache.size_bytes + 20_000  # full: the next sentence makes room
        await say(engine, texts[3])
        assert cache.size_bytes <= cache.max_bytes
        hits = {text: (await say(engine, text))[0].cached for text in (texts[0], texts[3], texts[1])}
    finally:
        await engine.close()
    assert hits[texts[0]] and hits[texts[3]]
    assert not hits[texts[1]], "the least recently used sentence should have been evicted"


async def test_a_corrupt_entry_is_ignored_and_synthesised_again(engine_with_cache, caplog):
    engine = engine_with_cache()
    try:
        (first,) = await say(engine, "The oven is preheating.")
        assert engine.cache is not None
        (entry,) = engine.cache.directory.glob(f"*{SUFFIX}")
        data = bytearray(entry.read_bytes())
        data[-100] ^= 0xFF  # one flipped byte in the samples
        entry.write_bytes(bytes(data))
        (again,) = await say(engine, "The oven is preheating.")
        (third,) = await say(engine, "The oven is preheating.")
    finally:
        await engine.close()
    assert not again.cached and again.pcm != bytes(data)
    assert any("corrupt" in record.message for record in caplog.records)
    assert third.cached and third.pcm == again.pcm, "the rebuilt entry is used from then on"
    assert len(first.pcm) > 10000


async def test_entries_survive_a_restart(engine_with_cache, tmp_path):
    engine = engine_with_cache()
    try:
        (first,) = await say(engine, "Sleep well, everyone.")
    finally:
        await engine.close()
    (tmp_path / "tts" / ".leftover.tmp").write_bytes(b"a write cut short")
    restarted = engine_with_cache()  # a new cache object over the same directory
    try:
        (again,) = await say(restarted, "Sleep well, everyone.")
    finally:
        await restarted.close()
    assert again.cached and again.pcm == first.pcm
    assert not (tmp_path / "tts" / ".leftover.tmp").exists()
