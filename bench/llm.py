"""The LLM: generation speed, time to the first `handled-chunk`, and intent accuracy.

In one run, with the bundled Gemma 3 270M (Q4_K_M) in process, or any GGUF (`--gguf`):
- tokens/s while generating, and the time to the first piece, for a few questions;
- over Wyoming (a wis_wyoming server on 127.0.0.1): from `transcript` to the first
  `handled-chunk` and to `handled`;
- intents: each labelled command below is sent as `recognize`; the answer counts as right when
  its intent name is the label (`none`: `not-recognized`). Every answer must parse (the schema
  holds the model to it): the count of answers that were neither is printed too.

    .venv/bin/python bench/llm.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from wyoming.asr import Transcript
from wyoming.client import AsyncTcpClient
from wyoming.intent import Intent, Recognize

from wis_wyoming.app import WisServer
from wis_wyoming.config import Settings

QUESTIONS = [
    "What is the weather usually like in spring?",
    "How do I make a cup of tea?",
    "Why is the sky blue?",
    "Tell me something about cats.",
]
# Commands (the texts of shared/speech/commands, and a few more) with the intent a Home
# Assistant user means; "none" for what is not a home command.
LABELLED = [
    ("activate Mood Lighting", "HassTurnOn"),
    ("add apples to my Shopping List", "HassShoppingListAddItem"),
    ("cancel all timers", "HassCancelTimer"),
    ("cancel timer", "HassCancelTimer"),
    ("is the Front Door locked", "HassGetState"),
    ("is the Garage Door open", "HassGetState"),
    ("lock the Front Door", "HassTurnOn"),
    ("nevermind", "HassNevermind"),
    ("next", "HassMediaNext"),
    ("pause", "HassMediaPause"),
    ("pause timer", "HassPauseTimer"),
    ("resume", "HassMediaUnpause"),
    ("resume timer", "HassUnpauseTimer"),
    ("run Party Time", "HassTurnOn"),
    ("set Bed Light brightness to 50 percent", "HassLightSet"),
    ("set Kitchen lights to green", "HassLightSet"),
    ("set a timer for 30 seconds", "HassStartTimer"),
    ("set a timer for 3 hours and 10 minutes", "HassStartTimer"),
    ("set a timer for 5 minutes", "HassStartTimer"),
    ("skip on TV", "HassMediaNext"),
    ("timer status", "HassTimerStatus"),
    ("turn off all of the lights in the Office", "HassTurnOff"),
    ("turn off lights in the Office", "HassTurnOff"),
    ("turn on Standing Light", "HassTurnOn"),
    ("turn on the living room lamp", "HassTurnOn"),
    ("what is the Outdoor Humidity", "HassGetState"),
    ("what time is it", "HassGetCurrentTime"),
    ("what's the date", "HassGetCurrentDate"),
    ("what's the temperature", "HassClimateGetTemperature"),
    ("what's the temperature of the EcoBee", "HassClimateGetTemperature"),
    ("what's the weather", "HassGetWeather"),
    ("what's the weather like in New York", "HassGetWeather"),
    ("switch off the bedroom fan", "HassTurnOff"),
    ("dim the hallway light to 20 percent", "HassLightSet"),
    ("set the thermostat to 21 degrees", "HassClimateSetTemperature"),
    ("add milk to the shopping list", "HassShoppingListAddItem"),
    ("what is the capital of France", "none"),
    ("tell me a joke", "none"),
    ("who wrote Hamlet", "none"),
    ("how far away is the moon", "none"),
]


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", default="bundled", help="bundled, or a GGUF file")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("WIS_CACHE_DIR", Path.home() / ".cache" / "wis_wyoming"))
    settings = Settings(
        uri="tcp://127.0.0.1:0", models=["tiny.en"], tts=False, llm=args.gguf, cache_dir=cache_dir,
        local_files_only=True, log_level="WARNING",
    )  # fmt: skip
    async with WisServer(settings) as server:
        assert server.llm is not None and server.agent is not None
        rates, firsts = [], []
        for question in QUESTIONS:
            options = replace(server.agent.settings.generation, max_tokens=128, seed=0)
            messages = [{"role": "user", "content": question}]
            started = time.perf_counter()
            first, count = None, 0
            async for _ in server.llm.stream(messages, options):
                count += 1
                first = first or time.perf_counter() - started
            elapsed = time.perf_counter() - started
            if first is not None and count > 1:
                rates.append((count - 1) / (elapsed - first))
                firsts.append(first)
        print(f"model: {server.llm.name}, {os.cpu_count()} cores")
        print(
            f"generation: {statistics.mean(rates):.0f} pieces/s (about a token each), "
            f"first piece after {statistics.mean(firsts) * 1000:.0f} ms"
        )

        to_chunk, to_handled = [], []
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            for index, question in enumerate(QUESTIONS):
                started = time.perf_counter()
                await client.write_event(
                    Transcript(question, context={"conversation_id": f"b{index}"}).event()
                )
                chunk_at = None
                while (event := await client.read_event()) is not None and event.type != "handled-stop":
                    if event.type == "handled-chunk" and chunk_at is None:
                        chunk_at = time.perf_counter() - started
                    if event.type == "handled":
                        to_handled.append(time.perf_counter() - started)
                to_chunk.append(chunk_at or 0.0)
        print(
            f"wyoming handle: first handled-chunk {statistics.mean(to_chunk) * 1000:.0f} ms, "
            f"handled {statistics.mean(to_handled) * 1000:.0f} ms (mean of {len(QUESTIONS)})"
        )

        right, unparsed, seconds = 0, 0, []
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            for text, label in LABELLED:
                started = time.perf_counter()
                await client.write_event(Recognize(text=text).event())
                event = await client.read_event()
                seconds.append(time.perf_counter() - started)
                if event is None or event.type not in ("intent", "not-recognized"):
                    unparsed += 1
                    continue
                name = Intent.from_event(event).name if event.type == "intent" else "none"
                right += name == label
                print(f"  {'ok ' if name == label else 'BAD'} {text!r}: {name} (label {label})")
        print(
            f"intents: {right}/{len(LABELLED)} right ({100 * right / len(LABELLED):.0f} %), "
            f"{unparsed} answers neither intent nor not-recognized, "
            f"{statistics.mean(seconds) * 1000:.0f} ms mean per command"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
