"""Streaming transcripts: decoding while audio arrives, commits, endpointing (real audio, real models)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import jiwer
import numpy as np
import pytest_asyncio
from whisper_normalizer.english import EnglishTextNormalizer
from wyoming.asr import Transcribe, Transcript, TranscriptChunk
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.ping import Ping

from wis_wyoming.app import WisServer
from wis_wyoming.engine.asr import TranscriptionOptions
from wis_wyoming.engine.audio import decode_file
from wis_wyoming.engine.streaming import (
    FIRST_COMMIT_SPEECH,
    TranscriptStream,
    after_committed,
    heard_again,
    heard_past,
    pass_stalled,
    settled_prefix,
    skipped_ahead,
    sure_prefix,
)
from wis_wyoming.engine.vad import FRAME_SECONDS, SpeechTracker
from wis_wyoming.engine.word_times import Word

from .conftest import push_in_real_time, read_wav, reference_text, speech
from .wyoming_client import SAMPLES_PER_CHUNK, next_event, read_answer

normalise = EnglishTextNormalizer()
LIBRI = "librispeech/1089-134686-0000.wav"  # 10.4 s
LONGFORM = "longform/librispeech_test-clean_20utt_concat.wav"
DOOR = "commands/lock_the_Front_Door.wav"


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


async def send_paced(
    client: AsyncTcpClient, pcm: bytes, rate: int, width: int, channels: int, speed: float = 1.0
) -> None:
    """Audio chunks at `speed` times real time, as a satellite's microphone sends them."""
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = SAMPLES_PER_CHUNK * width * channels
    started = time.perf_counter()
    for offset in range(0, len(pcm), step):
        await client.write_event(AudioChunk(rate, width, channels, pcm[offset : offset + step]).event())
        due = started + (offset + step) / (rate * width * channels) / speed
        await asyncio.sleep(max(0.0, due - time.perf_counter()))


def silence(seconds: float, rate: int = 16000) -> bytes:
    return np.zeros(int(seconds * rate), dtype=np.int16).tobytes()


async def test_info_advertises_transcript_streaming(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        program = Info.from_event(await next_event(client)).asr[0]
    assert program.supports_transcript_streaming
    assert program.requires_external_vad  # endpointing is opt-in


async def test_committed_text_streams_while_speaking_and_joins_into_the_transcript(server):
    pcm, rate, width, channels = read_wav(speech(LIBRI))
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Transcribe(name="tiny.en").event())
        sender = asyncio.create_task(send_paced(client, pcm, rate, width, channels, speed=1.5))
        first = await client.read_event()
        assert first is not None and first.type == "transcript-start"
        early = await client.read_event()
        # A committed chunk arrives while the audio is still being sent.
        assert early is not None and early.type == "transcript-chunk"
        assert not sender.done()
        await sender
        await client.write_event(AudioStop().event())
        events = [first, early, *await read_answer(client)]
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript", "transcript-stop"]
    assert set(types[1:-2]) == {"transcript-chunk"}
    chunks = "".join(TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk")
    transcript = Transcript.from_event(events[-2])
    assert chunks == transcript.text
    assert transcript.language == "en"
    # tiny.en, streamed at 1.5x: 2 to 4 of the 28 words off ("thick peppered flower fat and
    # sauce", "thick, leopard flower ...").
    assert wer(reference_text(speech(LIBRI)), transcript.text) < 0.2


async def test_silence_streams_an_empty_transcript_without_chunks(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await send_paced(client, silence(2.5), 16000, 2, 1, speed=2.0)
        await client.write_event(AudioStop().event())
        types = [e.type for e in await read_answer(client)]
        assert types == ["transcript-start", "transcript", "transcript-stop"]


async def test_audio_sent_at_once_gets_the_same_answer_shape(server):
    pcm, rate, width, channels = read_wav(speech(DOOR))
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await send_paced(client, pcm, rate, width, channels, speed=1000.0)
        await client.write_event(AudioStop().event())
        events = await read_answer(client)
    transcript = Transcript.from_event(events[-2])
    assert normalise(transcript.text) == normalise(reference_text(speech(DOOR)))
    chunks = "".join(TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk")
    assert chunks == transcript.text


async def test_committed_text_is_never_retracted_over_a_long_stream(server):
    """Engine level, 35 s of long-form speech (4 utterances) in real time: what was sent is what
    was committed, committed audio leaves the buffer, and the text is recognisably the speech.
    (The WER against offline decoding is measured on the whole files: bench/commit_latency.py.)"""
    utterances, seconds = longform_utterances(35.0)
    audio = decode_file(speech(LONGFORM))[: int(seconds * 16000)]
    resident, request = await server.engine.prepare()
    request = replace(request, beam_size=1)
    sent: list[str] = []  # the text a client has, after each commit
    engine_view: list[str] = []

    async def on_commit(text: str) -> None:
        sent.append((sent[-1] if sent else "") + text)
        engine_view.append(stream.committed)

    stream = TranscriptStream(server.engine, resident, request, on_commit=on_commit)
    await push_in_real_time(stream, audio)
    result = await stream.finish()

    # What was sent is what the engine had committed, and the end only appended to it.
    assert len(sent) > 5 and sent == engine_view
    assert sent[-1] == result.text
    assert result.stats.trims >= 1
    assert 0 < result.stats.max_buffer_seconds <= 30
    assert wer(" ".join(utterances), result.text) < 0.3


def longform_utterances(limit: float) -> tuple[list[str], float]:
    """Reference texts of the long-form utterances that end by `limit` s, and where the audio
    can be cut after them (in the pause before the next)."""
    rows = speech(LONGFORM).with_name(speech(LONGFORM).stem + ".segments.tsv").read_text().splitlines()
    texts, cut = [], 0.0
    for row in rows[1:]:
        _, _, end, text = row.split("\t")
        if float(end) > limit:
            break
        texts.append(text)
        cut = float(end) + 0.2
    return texts, cut


@pytest_asyncio.fixture(loop_scope="session")
async def endpoint_server(base_settings):
    """tiny.en with the server-side endpoint on."""
    async with WisServer(replace(base_settings, models=["tiny.en"], vad_endpoint=True)) as running:
        yield running


async def test_server_endpoint_answers_before_audio_stop(endpoint_server):
    pcm, rate, width, channels = read_wav(speech(DOOR))
    async with AsyncTcpClient("127.0.0.1", endpoint_server.port) as client:
        await client.write_event(Describe().event())
        assert not Info.from_event(await next_event(client)).asr[0].requires_external_vad
        await client.write_event(Transcribe(vad_sensitivity="aggressive").event())
        await send_paced(client, pcm, rate, width, channels, speed=2.0)
        # No audio-stop: the satellite keeps streaming room silence until it hears back.
        answer = asyncio.create_task(read_answer(client))
        for _ in range(40):
            if answer.done():
                break
            await client.write_event(AudioChunk(rate, width, channels, silence(0.1, rate)).event())
            await asyncio.sleep(0.1)
        events = await asyncio.wait_for(answer, 5)
        transcript = Transcript.from_event(events[-2])
        assert normalise(transcript.text) == normalise(reference_text(speech(DOOR)))
        # The rest of the stream is swallowed: its audio-stop gets no second answer.
        await client.write_event(AudioStop().event())
        await client.write_event(Ping(text="after").event())
        pong = await client.read_event()
        assert pong is not None and pong.type == "pong"


async def test_unknown_vad_sensitivity_is_refused(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Transcribe(vad_sensitivity="sleepy").event())
        error = await next_event(client)
    assert error.type == "error" and "vad_sensitivity" in error.data["text"]


def test_a_reheard_committed_word_is_not_committed_again_when_a_neighbour_is_misplaced():
    # A pass of librispeech 1089-134686-0000 at 1.5x (tiny.en), as aligned: "fat" came out
    # after the words it precedes. The committed words are found again by text all the same.
    committed = [Word(4.98, 5.48, " and"), Word(5.44, 5.78, " fat"), Word(5.62, 6.14, " mutton")]
    committed.append(Word(6.14, 6.48, " pieces"))
    heard = [(4.96, 5.62, " and"), (7.6, 7.6, " fat"), (5.6, 6.16, " mutton"), (6.16, 6.48, " pieces")]
    heard += [(6.48, 6.76, " to"), (6.76, 7.04, " be"), (7.04, 7.28, " ladled"), (7.28, 7.66, " out")]
    words = [Word(*w) for w in heard]
    new = after_committed(committed, words, committed_end=6.48, aligned=True)
    assert [w.text for w in new] == [" to", " be", " ladled", " out"]


def aligned_words(*heard: tuple[str, float, float]) -> list[Word]:
    return [Word(start, end, " " + text) for text, start, end in heard]


# base, drafts over test-other from 88.2 s, prompted "... to get rid of the marshal of the
# province.", while "that to get rid of the marshal, it was necessary" was being said: up to
# 89.8 s, the pass ran on with its prompt's words, aligned to no audio from "of" on.
RAN_ON = aligned_words(("that", 89.06, 89.38), ("to", 89.38, 89.52), ("get", 89.52, 89.70),
                       ("rid", 89.70, 89.78), ("of", 89.78, 89.78), ("the", 89.78, 89.78),
                       ("marshal", 89.78, 89.78), ("of", 89.78, 89.78))  # fmt: skip
# Up to 91.3 s, it heard what was said.
HEARD_OUT = aligned_words(("that", 88.94, 89.34), ("to", 89.34, 89.52), ("get", 89.52, 89.68),
                          ("rid", 89.68, 89.88), ("of", 89.88, 90.02), ("the", 90.02, 90.10),
                          ("marshal", 90.10, 90.54), ("it", 90.54, 90.84), ("was", 90.84, 91.04),
                          ("necessary.", 91.04, 91.28))  # fmt: skip


def test_words_aligned_to_no_audio_wait_for_a_pass_that_heard_well_past_them():
    def committable(words: list[Word], heard_until: float, silent: bool) -> int:
        return heard_past(words, len(words), heard_until, heard_into_silence=silent)

    # At the audio's edge, words wait for the pass to hear past them.
    assert committable(RAN_ON, 89.8, silent=False) == 2
    # Were the audio to end in silence, the words heard would commit, and not those run on.
    assert committable(RAN_ON, 89.8, silent=True) == 4
    assert committable(RAN_ON, 90.5, silent=False) == 4
    assert committable(RAN_ON, 90.8, silent=False) == 8
    assert committable(HEARD_OUT, 91.3, silent=False) == 9
    # A word squeezed into no time with words heard after it was heard too.
    squeezed = [*HEARD_OUT[:2], Word(89.52, 89.52, " get"), *HEARD_OUT[3:]]
    assert committable(squeezed, 91.3, silent=False) == 9


def test_committed_words_squeezed_into_too_little_audio_are_found_again():
    # Had the words the pass ran on with been committed, the pass over more audio hears them
    # again later, by more than the tolerance at their end, but not at their start; the
    # committed "of" it does not hear again, and "it" is new.
    new = after_committed(RAN_ON, HEARD_OUT, committed_end=89.78, aligned=True)
    assert [w.text for w in new] == [" it", " was", " necessary."]
    # A committed word heard differently, where it was, is not taken for a new one.
    misheard = [*HEARD_OUT[:7], Word(90.54, 90.84, " if"), *HEARD_OUT[8:]]
    committed = [*HEARD_OUT[:7], Word(90.50, 90.80, " it")]
    new = after_committed(committed, misheard, committed_end=90.80, aligned=True)
    assert [w.text for w in new] == [" was", " necessary."]


def spaced_words(text: str, start: float, step: float) -> list[Word]:
    """Words one after another from `start`, `step` seconds each."""
    return [Word(start + step * i, start + step * (i + 1), " " + w) for i, w in enumerate(text.split())]


def test_a_common_word_further_on_is_not_taken_for_the_committed_end_without_aligned_times():
    # The final pass of librispeech 1089-134686-0000 at 1.5x (tiny.en), not aligned (times
    # spread over its segment), after "... ladled out and thick" was committed: its "and" before
    # "sauce" matched the committed "and", and "peppered flour fat and" was lost.
    committed = spaced_words("pieces to be ladled out and thick", 6.1, 0.31)
    heard = spaced_words("pieces to be ladled out in thick peppered flower fat and sauce.", 6.2, 0.36)
    assert heard_again(committed, heard, committed_end=8.3) is None
    # Heard the same way, or with the last committed word misheard, the tail is found.
    assert (
        heard_again(committed, spaced_words("pieces to be ladled out and thick peppered", 6.2, 0.36), 8.3)
        == 7
    )
    assert (
        heard_again(committed, spaced_words("pieces to be ladled out and sick pepper", 6.2, 0.36), 8.3) == 7
    )


def test_a_word_cut_off_at_a_hyphen_is_not_committed_until_it_is_whole():
    # base streaming longform/librispeech_test-clean_20utt_concat.wav: two passes whose audio
    # ended inside "Tintoret" heard "tin-" and "tin-tare.", split where alignment splits words,
    # and "tin" was committed for the name.
    def words(*pieces: str) -> list[Word]:
        return [Word(60.0 + 0.3 * i, 60.3 + 0.3 * i, p) for i, p in enumerate(pieces)]

    cut_off = words(" turner", " and", " tin", "-")
    assert settled_prefix(cut_off, words(" turner", " and", " tin", "-tare.")) == 2
    # Once the word is whole, it and the words agreed after it commit.
    whole = words(" and", " wake", "-word", " now")
    assert settled_prefix(whole, words(" and", " wake", "-word", " now", " on")) == 4


def test_words_the_decoder_was_sure_of_commit_without_waiting_for_the_next_pass():
    # base streaming longform/librispeech_test-other_10utt_concat.wav, a pass over audio up to
    # 35.1 s: "I" agreed with the pass before; "may" and "be" were heard for the first time.
    def pass_words(*heard: tuple[str, float, float | None]) -> list[Word]:
        return [Word(end - 0.15, end, text, probability) for text, end, probability in heard]

    words = pass_words((" I", 34.40, 0.91), (" may", 34.56, 0.97), (" be", 34.74, 0.99),
                       (" able", 34.90, 0.99), (" to...", 35.04, 0.61))  # fmt: skip
    # "able" ends too near the end of the audio to be known whole; "to..." is unsure.
    assert sure_prefix(words, 1, heard_until=35.1) == 3
    assert sure_prefix(words, 1, heard_until=36.0) == 4
    # An unsure word holds back the sure ones after it; agreed words stay agreed.
    assert sure_prefix(pass_words((" reply", 29.24, 0.09), (" to", 29.42, 0.98)), 0, 31.0) == 0
    assert sure_prefix(words, 5, heard_until=35.1) == 5
    # Words placed without alignment carry no probability, and wait for agreement.
    assert sure_prefix(pass_words((" may", 34.56, None), (" be", 34.74, None)), 0, 36.0) == 0
    # A sure word cut off at a hyphen waits until it is whole, as an agreed one does.
    cut_off = pass_words((" and", 60.3, 0.99), (" tin", 60.6, 0.99), ("-tare.", 60.9, 0.4))
    assert sure_prefix(cut_off, 0, heard_until=62.0) == 1


def test_a_pass_that_skipped_the_committed_words_it_holds_is_told_from_one_that_misheard_them():
    # tiny.en streaming longform/librispeech_test-other_10utt_concat.wav, buffer from 100.3 s,
    # prompted "... it was necessary to secure the wrongs right to vote.": the pass skipped the
    # committed words in its buffer, which repeat the prompt's phrase, and aligned "They" among
    # them. Unprompted, it heard them again, one name misheard.
    committed = spaced_words("that to secure the recognition of florida's right to", 100.3, 0.33)
    skipped = [Word(101.0, 101.7, " They"), Word(101.7, 101.8, " must"), Word(101.8, 101.8, " decide.")]
    reheard = spaced_words("that to secure the recognition of La Rosa's right to vote, they must", 100.3, 0.3)
    # Later in the same stream: two words of four heard again.
    said = spaced_words("that is master pernicious", 115.5, 0.4)
    misheard = spaced_words("That this master perishes and we", 115.5, 0.4)

    assert skipped_ahead(committed, skipped)
    assert skipped_ahead(committed, [*skipped, *spaced_words("on the", 102.0, 0.2)])
    assert not skipped_ahead(committed, reheard)
    assert not skipped_ahead(said, misheard)
    assert not skipped_ahead(committed[-3:], skipped)  # too few committed words to tell


def test_a_pass_that_left_out_a_new_sentence_stalls_sooner_than_one_cut_off_mid_sentence():
    # base streaming longform/librispeech_test-clean_20utt_concat.wav: a pass over 79.0-86.5 s
    # heard up to "... braided with gold." (ending at 84.92 s) and nothing of "It was", said from
    # 85.9 s on; two passes over that buffer had left the sentence out.
    left_out = {"reach": 84.92, "heard_until": 86.5, "speech_end": 86.4}
    assert pass_stalled(" gold.", all_committed=True, **left_out)
    # Words still waiting for the next pass to agree: not a stall.
    assert not pass_stalled(" gold.", all_committed=False, **left_out)
    # The speaker paused after the clause: nothing was left out.
    assert not pass_stalled(" gold.", all_committed=True, reach=84.92, heard_until=86.5, speech_end=85.0)
    # Mid-sentence, a pass is taken to have stalled only after two seconds.
    assert not pass_stalled(" with", all_committed=True, **left_out)
    assert pass_stalled(" with", all_committed=True, reach=84.92, heard_until=87.1, speech_end=87.0)


async def test_nothing_commits_until_passes_have_heard_two_seconds_of_speech(server):
    """A stream's first words are guessed at over a second of speech; they commit once a pass
    has heard two, and commits go on streaming from then."""
    audio = decode_file(speech(LIBRI))[: 6 * 16000]
    tracker = SpeechTracker()
    tracker.push(audio)
    assert tracker.first_speech_frame is not None
    speech_began = tracker.first_speech_frame * FRAME_SECONDS
    resident, request = await server.engine.prepare(TranscriptionOptions(model="tiny.en"))
    stream: TranscriptStream
    committed_at: list[float] = []

    async def on_commit(text: str) -> None:
        committed_at.append(stream.duration)

    stream = TranscriptStream(server.engine, resident, replace(request, beam_size=1), on_commit=on_commit)
    await push_in_real_time(stream, audio, step=1600)
    await stream.finish()

    assert sum(at < len(audio) / 16000 for at in committed_at) >= 2  # while the audio arrived
    assert committed_at[0] >= speech_began + FIRST_COMMIT_SPEECH


async def test_the_end_does_not_wait_for_an_update_it_supersedes(server):
    """Audio that ends while an update is being decoded: the final pass starts at once and the
    update's words go unused; the transcript is whole and the commits still join into it."""
    audio = decode_file(speech(LIBRI))
    # base: its updates take long enough (a quarter of a second) for the end to land in one.
    resident, request = await server.engine.prepare(TranscriptionOptions(model="base", language="en"))
    request = replace(request, beam_size=1)
    sent: list[str] = []

    async def on_commit(text: str) -> None:
        sent.append(text)

    stream = TranscriptStream(server.engine, resident, request, on_commit=on_commit)
    step = 1600
    end = len(audio) - int(2.4 * 16000)
    await push_in_real_time(stream, audio[:end], step=step)
    # Real time until an update starts (one is due every half second of new audio; waiting
    # without audio could wait for ever, if a pass had just heard it all), then at once the
    # rest, at least 0.4 s: the end arrives just after the update started, not as it finishes.
    idle = not stream.decoding
    while not (idle and stream.decoding) and end < len(audio) - int(0.4 * 16000):
        stream.push(audio[end : end + step])
        end += step
        due = time.perf_counter() + step / 16000
        while time.perf_counter() < due and not (idle and stream.decoding):
            await asyncio.sleep(0.002)
            idle = idle or not stream.decoding
    assert stream.decoding
    stream.push(audio[end:])
    result = await stream.finish()

    assert result.stats.superseded_passes == 1 and result.stats.final_pass
    assert "".join(sent) == result.text
    assert wer(reference_text(speech(LIBRI)), result.text) < 0.15


async def test_a_pause_pass_is_the_answer_only_if_whisper_would_have_kept_it(server):
    """A pass at a pause is decoded once, greedily, on the answer's window: a clear command's
    words are the answer and nothing is decoded at the end; words that would have sent Whisper to
    its temperature fallback are decoded again at the end. (Two voices at once, reversed: base's
    greedy words on them average a log probability of -1.25 to -1.52, under Whisper's -1, however
    much of the pause a pass hears. On one reversed voice it wavers around the threshold.)"""
    resident, request = await server.engine.prepare(TranscriptionOptions(model="base", language="en"))
    pause = np.zeros(16000, dtype=np.float32)
    voices = [decode_file(speech(f"misc/LJ001-000{n}.wav")) for n in (1, 4)]
    shortest = min(len(voice) for voice in voices)
    babble = (sum(voice[:shortest] for voice in voices) / 2)[::-1].copy()
    results = []
    for audio in (decode_file(speech(DOOR)), babble):
        stream = TranscriptStream(server.engine, resident, request)
        await push_in_real_time(stream, np.concatenate([audio, pause]))
        while stream.decoding:  # the pause pass, started a quarter of a second into the pause
            await asyncio.sleep(0.01)
        results.append(await stream.finish())
    clear, gibberish = results

    assert not clear.stats.final_pass
    assert normalise(clear.text) == normalise(reference_text(speech(DOOR)))
    assert gibberish.stats.final_pass and gibberish.text
