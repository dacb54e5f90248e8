"""The LLM over Wyoming: handle (answers streamed) and intent (constrained JSON), with the bundled
Gemma 3 270M in process and behind a real OpenAI-compatible server (llama.cpp's) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from dataclasses import replace

import aiohttp
import pytest
import pytest_asyncio
from wyoming.asr import Transcript
from wyoming.client import AsyncTcpClient
from wyoming.handle import Handled, HandledChunk, NotHandled
from wyoming.info import Describe, Info
from wyoming.intent import Intent, NotRecognized, Recognize

from wis_wyoming.app import WisServer
from wis_wyoming.engine.asr import TranscriptionOptions
from wis_wyoming.engine.audio import decode_file
from wis_wyoming.engine.conversation import AgentSettings, ConversationAgent
from wis_wyoming.engine.intents import INTENTS, SLOTS, IntentRecognizer, parse_intent
from wis_wyoming.engine.llm import GenerationOptions, OpenAiBackend, bundled_gguf
from wis_wyoming.engine.voice_chain import VoiceChain

from .conftest import corpus, reference_text, speech

NOT_COMMANDS = ["What is the capital of France?", "Tell me a joke about cats.", "Who wrote Hamlet?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def read_until(client: AsyncTcpClient, *types: str) -> list:
    events = []
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout=120)
        assert event is not None, f"connection closed after {[e.type for e in events]}"
        events.append(event)
        if event.type in types:
            return events


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def openai_server(cache_dir):
    """llama.cpp's own OpenAI-compatible server, serving the bundled GGUF on 127.0.0.1."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf(cache_dir)),
         "--model_alias", "gemma", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.poll() is None, "llama_cpp.server exited"
            try:
                async with session.get(f"{url}/models") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            await asyncio.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


async def test_info_offers_handle_and_intent_programs(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await client.read_event())
    assert info.handle and info.handle[0].supports_handled_streaming
    assert info.intent and info.asr and info.tts, "one server: speech in, answers, speech out"


async def test_a_question_is_answered_in_streamed_chunks_over_wyoming(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        question = Transcript(
            text="What color is the sky on a clear day?", context={"conversation_id": "sky"}
        )
        await client.write_event(question.event())
        events = await read_until(client, "handled-stop")
    types = [e.type for e in events]
    assert types[0] == "handled-start" and types[-2:] == ["handled", "handled-stop"]
    assert set(types[1:-2]) == {"handled-chunk"} and len(types) > 4
    chunks = "".join(HandledChunk.from_event(e).text for e in events if e.type == "handled-chunk")
    answer = Handled.from_event(events[-2])
    assert answer.text == chunks.strip() and answer.text
    assert answer.context == {"conversation_id": "sky"}
    assert server.agent.history("sky")[-1] == {"role": "assistant", "content": answer.text}


async def test_history_is_kept_per_conversation_and_bounded(server):
    agent = ConversationAgent(
        server.llm, AgentSettings(history_turns=2, generation=GenerationOptions(max_tokens=24, seed=1))
    )
    for question in ("My name is Ada.", "What is my name?", "Say hello.", "Say goodbye."):
        _ = [piece async for piece in agent.reply(question, "ada")]
    _ = [piece async for piece in agent.reply("Hi.", "other")]
    history = agent.history("ada")
    assert len(history) == 4 and [m["role"] for m in history] == ["user", "assistant"] * 2
    assert history[0]["content"] == "Say hello." and history[2]["content"] == "Say goodbye."
    assert agent.history("other")[0]["content"] == "Hi."


async def test_intents_always_come_back_as_intent_or_not_recognized(server):
    texts = [reference_text(clip) for clip in corpus("commands")[:12]] + NOT_COMMANDS
    kinds = []
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        for text in texts:
            await client.write_event(Recognize(text=text).event())
            (event,) = await read_until(client, "intent", "not-recognized")
            if Intent.is_type(event.type):
                intent = Intent.from_event(event)
                assert intent.name in INTENTS and intent.text == text
                assert all(entity.name in SLOTS for entity in intent.entities)
                kinds.append(intent.name)
            else:
                assert NotRecognized.is_type(event.type)
                kinds.append(None)
    assert any(kind is not None for kind in kinds), "not one command was recognised"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('{"intent": "turn_on", "name": "kitchen light"}', ("HassTurnOn", {"name": "kitchen light"})),
        (
            '{"intent": "set_timer", "duration_seconds": 300.0}',
            ("HassStartTimer", {"duration_seconds": 300}),
        ),
        ('{"intent": "turn_on"}', None),  # turn on what?
        ('{"intent": "set_light", "name": "lamp", "brightness": 400}', ("HassLightSet", {"name": "lamp"})),
        ('{"intent": "none"}', None),
        ('{"intent": "turn_on", "name": ', None),  # cut short
        ('{"intent": "HassTurnOn", "name": "lamp"}', None),  # the model writes labels, not HA's names
        ('{"intent": "MakeCoffee", "name": "pot"}', None),
    ],
)
def test_model_output_is_checked_before_it_becomes_an_intent(output, expected):
    intent = parse_intent(output)
    assert (intent.name, intent.entities) == expected if expected else intent is None


async def test_the_openai_backend_streams_and_holds_to_the_schema(openai_server):
    backend = OpenAiBackend(openai_server, "gemma", json_mode="json_object")
    try:
        agent = ConversationAgent(backend, AgentSettings(generation=GenerationOptions(max_tokens=40, seed=3)))
        pieces = [piece async for piece in agent.reply("Name one fruit.", "fruit")]
        assert len(pieces) > 1 and "".join(pieces).strip()
        recognizer = IntentRecognizer(backend)
        intent = await recognizer.recognize("turn on the kitchen light")
        assert intent is None or intent.name in INTENTS
        raw = [p async for p in backend.stream([{"role": "user", "content": "hi"}], recognizer.options, {
            "type": "object", "properties": {"intent": {"type": "string", "enum": ["a", "b"]}},
            "required": ["intent"]})]  # fmt: skip
        assert "".join(raw).replace(" ", "") in ('{"intent":"a"}', '{"intent":"b"}')
    finally:
        await backend.close()


async def test_a_backend_that_fails_or_hangs_gets_not_handled(base_settings):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)  # accepts the request and never answers

    hanging = await asyncio.start_server(silent, "127.0.0.1", 0)
    hanging_port = hanging.sockets[0].getsockname()[1]
    closed_port = free_port()
    try:
        for port, reason in ((closed_port, "cannot be reached"), (hanging_port, "did not answer within")):
            settings = replace(
                base_settings,
                models=["tiny.en"],
                tts=False,
                llm="openai",
                llm_url=f"http://127.0.0.1:{port}/v1",
                llm_model="remote",
                llm_timeout=2.0,
            )
            async with WisServer(settings) as running, AsyncTcpClient("127.0.0.1", running.port) as client:
                await client.write_event(Transcript(text="Hello?").event())
                events = await read_until(client, "handled-stop")
                assert [e.type for e in events] == ["handled-start", "not-handled", "handled-stop"]
                assert reason in NotHandled.from_event(events[1]).text
                await client.write_event(Recognize(text="turn on the lamp").event())
                (event,) = await read_until(client, "not-recognized", "intent")
                assert event.type == "not-recognized" and reason in event.data["text"]
    finally:
        hanging.close()


async def test_the_voice_chain_speaks_before_the_llm_has_finished(server):
    # Seeded, so the answer has a first phrase to speak while the rest is written ("In the
    # incubi, | the temperature is about 24 degrees Celsius." from the 270M base model).
    prompt = "You are a home assistant who explains things in detail, in at least five sentences."
    generation = GenerationOptions(max_tokens=120, seed=1)
    agent = ConversationAgent(server.llm, AgentSettings(system_prompt=prompt, generation=generation))
    chain = VoiceChain(server.engine, agent, server.tts)
    clip = speech("commands/whats_the_temperature_of_the_EcoBee.wav")
    steps = [
        step async for step in chain.run(decode_file(clip), "chain", TranscriptionOptions(model="tiny.en"))
    ]
    kinds = [step.kind for step in steps]
    assert kinds[0] == "heard" and "temperature" in steps[0].text.lower()
    assert kinds[-1] == "done" and kinds.count("done") == 1
    spoken = [step for step in steps if step.kind == "spoken"]
    said = "".join(step.text for step in steps if step.kind == "said").strip()
    assert spoken and steps[-1].text == said
    # Every word of the answer is spoken, and the first audio came while the LLM still wrote.
    assert " ".join(step.text for step in spoken).split() == said.split()
    assert len(spoken) >= 2 and spoken[0].at < steps[-1].at
