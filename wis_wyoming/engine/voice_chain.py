"""Speech in, speech out: transcript → LLM → Piper in one call.

The answer is spoken while the LLM is still writing it: each piece of text goes through the
same `ReplySplitter` as a streamed `synthesize`, so its first phrase is synthesised as soon as it
is written, on the TTS worker, while the LLM's own worker goes on generating the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from .asr import AsrEngine, TranscriptionOptions
from .conversation import ConversationAgent
from .speech_text import ReplySplitter, SpeechPart
from .tts import SpokenSentence, SynthesisOptions, TtsEngine


@dataclass(frozen=True)
class ChainStep:
    kind: str  # "heard" (the transcript), "said" (a piece of the answer), "spoken" (audio), "done"
    at: float  # seconds since the call began
    text: str = ""  # heard: the transcript; said: the piece; spoken: the part, on its first piece
    # of audio; done: the whole answer
    audio: SpokenSentence | None = None
    language: str | None = None


class VoiceChain:
    def __init__(self, asr: AsrEngine, agent: ConversationAgent, tts: TtsEngine) -> None:
        self.asr = asr
        self.agent = agent
        self.tts = tts

    async def run(
        self,
        audio: np.ndarray,
        conversation_id: str | None = None,
        transcription: TranscriptionOptions | None = None,
        synthesis: SynthesisOptions | None = None,
    ) -> AsyncIterator[ChainStep]:
        """16 kHz mono audio in; the transcript, the answer's pieces and its audio out, in the
        order they happen. Nothing said gives only the `heard` step with empty text."""
        started = time.perf_counter()
        synthesis = synthesis or SynthesisOptions()
        voice = self.tts.voice(synthesis)
        heard = await self.asr.transcribe(audio, transcription or TranscriptionOptions())
        yield ChainStep("heard", time.perf_counter() - started, heard.text, language=heard.language)
        if not heard.text.strip():
            return

        steps: asyncio.Queue[ChainStep | SpeechPart | None] = asyncio.Queue()

        async def write() -> None:
            splitter, pieces = ReplySplitter(synthesis.quick_start), []
            try:
                async for piece in self.agent.reply(heard.text, conversation_id, heard.language):
                    pieces.append(piece)
                    steps.put_nowait(ChainStep("said", time.perf_counter() - started, piece))
                    for part in splitter.push(piece):
                        steps.put_nowait(part)
                for part in splitter.flush():
                    steps.put_nowait(part)
                steps.put_nowait(ChainStep("done", time.perf_counter() - started, "".join(pieces).strip()))
            finally:
                steps.put_nowait(None)

        writer = asyncio.create_task(write())
        try:
            while (step := await steps.get()) is not None:
                if isinstance(step, SpeechPart):
                    text = step.text
                    async for piece in self.tts.stream_part(step, synthesis, voice):
                        yield ChainStep("spoken", time.perf_counter() - started, text, piece)
                        text = ""  # a part's later pieces: its text came with the first
                else:
                    yield step
            await writer  # raises what the LLM raised
        finally:
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
