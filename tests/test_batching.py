"""Passes of concurrent requests share decoder calls; answers first; nothing is lost."""

from __future__ import annotations

import asyncio
import threading

import pytest
from wyoming.asr import Transcribe, Transcript

from wis_wyoming.engine.asr import PassKind, TranscriptionOptions
from wis_wyoming.engine.audio import decode_file
from wis_wyoming.engine.encoder_window import PassAbandoned
from wis_wyoming.engine.scheduler import BatchScheduler, Job

from .conftest import corpus, speech
from .wyoming_client import transcribe_wav


async def test_concurrent_requests_share_batches_and_answer_as_if_alone(server):
    """Every command sent at once: fewer decoder calls than requests, the same transcripts."""
    engine = server.engine
    clips = corpus("commands")
    audios = [decode_file(clip) for clip in clips]
    options = TranscriptionOptions(model="tiny.en")
    alone = [(await engine.transcribe(audio, options)).text for audio in audios]

    scheduler = engine.resident["tiny.en"].scheduler
    batches, jobs = scheduler.batches, scheduler.batched_jobs
    # Eight at a time: the engine's default bound on requests in flight per model.
    together = []
    for start in range(0, len(audios), 8):
        group = audios[start : start + 8]
        together += [t.text for t in await asyncio.gather(*(engine.transcribe(a, options) for a in group))]
    assert scheduler.batched_jobs - jobs == len(audios)
    assert scheduler.batches - batches < len(audios) / 2
    assert together == alone


async def test_clients_streaming_at_once_each_get_their_own_transcript(server):
    clips = corpus("commands")[:6]
    request = Transcribe(name="tiny.en")
    events = await asyncio.gather(*(transcribe_wav(server.port, clip, request) for clip in clips))
    for clip, event in zip(clips, events, strict=True):
        alone = await transcribe_wav(server.port, clip, request)
        assert Transcript.from_event(event).text == Transcript.from_event(alone).text


def run_scheduler(jobs: list[tuple[str, object, bool]], max_batch: int = 8) -> list[list[str]]:
    """Queue the jobs while the worker is held on a first one, then record the batches it runs."""
    held = threading.Event()
    batches: list[list[str]] = []

    def run_batch(batch: list[Job]) -> None:
        if batch[0].payload == "first":
            held.wait()
        else:
            batches.append([job.payload for job in batch])
        for job in batch:
            job.future.set_result(job.payload)

    scheduler = BatchScheduler("test", run_batch, max_batch)
    try:
        first = scheduler.submit("first", None, urgent=True)
        queued = [scheduler.submit(name, key, urgent) for name, key, urgent in jobs]
        held.set()
        assert first.future.result(timeout=10) == "first"
        for job in queued:
            job.future.result(timeout=10)
    finally:
        scheduler.close()
    return batches


def test_answers_go_before_updates_and_batches_share_a_key():
    batches = run_scheduler(
        [
            ("update-a", "en", False),
            ("update-b", "en", False),
            ("answer-c", "de", True),
            ("answer-d", "en", True),
            ("update-e", "de", False),
            ("alone", None, True),
        ]
    )
    # The oldest answer leads; the batch fills with its key's jobs, answers first.
    assert batches == [["answer-c", "update-e"], ["answer-d", "update-a", "update-b"], ["alone"]]


def test_batches_never_exceed_the_limit():
    batches = run_scheduler([(f"job-{i}", "en", True) for i in range(5)], max_batch=2)
    assert batches == [["job-0", "job-1"], ["job-2", "job-3"], ["job-4"]]


def test_a_failing_batch_fails_its_jobs_and_the_worker_carries_on():
    def run_batch(batch: list[Job]) -> None:
        if batch[0].payload == "bad":
            raise RuntimeError("decoder failed")
        for job in batch:
            job.future.set_result(job.payload)

    scheduler = BatchScheduler("test", run_batch, 8)
    try:
        bad = scheduler.submit("bad", None, urgent=True)
        good = scheduler.submit("good", None, urgent=True)
        assert isinstance(bad.future.exception(timeout=10), RuntimeError)
        assert good.future.result(timeout=10) == "good"
    finally:
        scheduler.close()


def test_a_cancelled_job_is_not_run():
    held = threading.Event()
    ran: list[str] = []

    def run_batch(batch: list[Job]) -> None:
        held.wait()
        ran.extend(job.payload for job in batch)
        for job in batch:
            job.future.set_result(job.payload)

    scheduler = BatchScheduler("test", run_batch, 8)
    try:
        first = scheduler.submit("first", None, urgent=True)
        gone = scheduler.submit("gone", None, urgent=True)
        kept = scheduler.submit("kept", None, urgent=True)
        assert gone.future.cancel()
        held.set()
        assert kept.future.result(timeout=10) == "kept"
        assert first.future.result(timeout=10) == "first"
    finally:
        scheduler.close()
    assert ran == ["first", "kept"]


def test_with_two_workers_an_answer_runs_beside_a_batch_in_progress():
    started, held = threading.Event(), threading.Event()

    def run_batch(batch: list[Job]) -> None:
        if batch[0].payload == "long update":
            started.set()
            held.wait(timeout=10)
        for job in batch:
            job.future.set_result(threading.current_thread().name)

    scheduler = BatchScheduler("test", run_batch, 8, workers=2)
    try:
        update = scheduler.submit("long update", "en", urgent=False)
        assert started.wait(timeout=10)
        answer = scheduler.submit("answer", "de", urgent=True)
        # The answer is done while the update still holds the other worker.
        answered_on = answer.future.result(timeout=10)
        assert not update.future.done()
        held.set()
        assert update.future.result(timeout=10) != answered_on
    finally:
        scheduler.close()


async def test_an_abandoned_pass_stops_before_its_next_stage(server):
    """A pass nobody waits for any more (a streaming update the end of the audio superseded)
    gives up at its next stage instead of holding a core; the same pass left alone is decoded."""
    # base on its padded window: its passes take long enough (encoding alone 0.3-0.7 s on 2 cores)
    # that the abandon always lands before the last stage, however slowly this loop notices.
    resident, request = await server.engine.prepare(TranscriptionOptions(model="base", language="en"))
    audio = decode_file(speech("librispeech/1089-134686-0000.wav"))  # 10.4 s

    def submit() -> Job:
        return resident.submit(audio, request, None, PassKind.UPDATE, urgent=False, word_times=True)

    left_alone = submit()
    segments, _, _ = await asyncio.wrap_future(left_alone.future)
    assert segments and all(segment.words for segment in segments)

    abandoned = submit()
    while not abandoned.future.running():  # it is past the queue: only its stages can stop it
        await asyncio.sleep(0.001)
    abandoned.abandon()
    with pytest.raises(PassAbandoned):
        await asyncio.wrap_future(abandoned.future)
