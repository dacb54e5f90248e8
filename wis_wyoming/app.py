"""The running server: engine + transports, started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from aiohttp import web

from .config import Settings
from .engine.asr import AsrDefaults, AsrEngine
from .engine.conversation import DEFAULT_SYSTEM_PROMPT, AgentSettings, ConversationAgent
from .engine.hardware import ComputePlan, plan_compute
from .engine.intents import IntentRecognizer
from .engine.llm import GenerationOptions, LlamaCppBackend, LlmBackend, OpenAiBackend, bundled_gguf
from .engine.models import ModelRegistry
from .engine.tts import TtsDefaults, TtsEngine
from .engine.tts_cache import TtsCache
from .engine.voices import VoiceCatalogue
from .errors import ConfigError
from .transports.http_api import start_http
from .transports.http_rtc import RtcOptions
from .transports.http_services import HttpServices
from .transports.wyoming_handler import WyomingHandler, WyomingService
from .transports.zeroconf import ZeroconfAdvertiser, advertised_addresses

_LOGGER = logging.getLogger(__name__)


def build_engine(settings: Settings) -> tuple[AsrEngine, list[str]]:
    """The ASR engine for these settings, and the names of the models to keep resident."""
    plan = plan_compute(settings.device, settings.compute_type, settings.cpu_threads)
    _LOGGER.info("Compute plan: %s", plan.describe())
    registry = ModelRegistry(settings.cache_dir, settings.hf_cache_dir, settings.local_files_only)
    names = [registry.add_spec(spec) for spec in settings.models]
    defaults = AsrDefaults(
        model=names[0],
        language=settings.language,
        task=settings.task,
        beam_size=settings.beam_size,
        initial_prompt=settings.initial_prompt,
        max_queue=settings.max_queue,
        max_batch=settings.max_batch,
        encoder_window=settings.encoder_window,
        vad=settings.vad,
    )
    return AsrEngine(registry, plan, defaults), names


def build_tts(settings: Settings, plan: ComputePlan) -> TtsEngine | None:
    """Piper with the bundled voice and the voices directory, or None when TTS is off."""
    if not settings.tts:
        return None
    cache = None
    if settings.tts_cache_mb > 0:
        cache = TtsCache(settings.tts_cache_path, settings.tts_cache_mb << 20)
    catalogue = VoiceCatalogue(settings.voices_path)
    return TtsEngine(catalogue, plan, cache, TtsDefaults(voice=settings.voice))


def build_llm(settings: Settings, plan_threads: int) -> LlmBackend | None:
    """The LLM backend for these settings, or None when it is off."""
    choice = settings.llm
    if choice == "none":
        return None
    if choice == "openai" or settings.llm_url:
        if not settings.llm_url or not settings.llm_model:
            raise ConfigError("llm openai needs llm_url and llm_model")
        return OpenAiBackend(
            settings.llm_url, settings.llm_model, settings.llm_api_key, settings.llm_json_mode
        )
    path = bundled_gguf(settings.cache_dir) if choice == "bundled" else Path(choice).expanduser()
    if path is None or not path.is_file():
        raise ConfigError(f"llm {choice!r}: no GGUF file found (bundled, a path, openai or none)")
    return LlamaCppBackend(path, plan_threads)


def build_agent(settings: Settings, backend: LlmBackend) -> ConversationAgent:
    generation = GenerationOptions(
        temperature=settings.llm_temperature,
        top_p=settings.llm_top_p,
        max_tokens=settings.llm_max_tokens,
        timeout=settings.llm_timeout,
    )
    agent_settings = AgentSettings(
        system_prompt=settings.llm_system_prompt or DEFAULT_SYSTEM_PROMPT,
        history_turns=settings.llm_history,
        generation=generation,
    )
    return ConversationAgent(backend, agent_settings)


class WisServer:
    """Loads the resident models, listens for Wyoming clients and advertises itself."""

    def __init__(self, settings: Settings, progress: bool = False) -> None:
        self.settings = settings
        self.progress = progress
        self.engine: AsrEngine | None = None
        self.tts: TtsEngine | None = None
        self.llm: LlmBackend | None = None
        self._http: web.AppRunner | None = None
        self.agent: ConversationAgent | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._advertiser: ZeroconfAdvertiser | None = None

    @property
    def port(self) -> int | None:
        """The TCP port actually bound (useful with port 0)."""
        if self._server is None or urlparse(self.settings.uri).scheme != "tcp":
            return None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self.engine, names = build_engine(self.settings)
        await self.engine.preload(names, self.progress)
        self.tts = build_tts(self.settings, self.engine.plan)
        if self.tts is not None:
            await self.tts.preload()
        self.llm = await asyncio.to_thread(build_llm, self.settings, self.engine.plan.cpu_threads)
        recognizer = None
        if self.llm is not None:
            self.agent = build_agent(self.settings, self.llm)
            recognizer = IntentRecognizer(self.llm, self.settings.llm_timeout)
        service = WyomingService(
            self.engine,
            self.settings.max_audio_seconds,
            stream_transcripts=self.settings.stream_transcripts,
            vad_endpoint=self.settings.vad_endpoint,
            tts=self.tts,
            agent=self.agent,
            recognizer=recognizer,
        )
        uri = urlparse(self.settings.uri)
        handler_factory = partial(WyomingHandler, service)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            try:
                await handler_factory(reader, writer).run()
            finally:
                self._connections.discard(task)

        try:
            if uri.scheme == "tcp":
                self._server = await asyncio.start_server(on_connect, uri.hostname, uri.port)
            else:  # unix, the only other scheme the settings accept
                Path(uri.path).unlink(missing_ok=True)
                self._server = await asyncio.start_unix_server(on_connect, uri.path)
        except OSError as err:
            raise ConfigError(f"cannot listen on {self.settings.uri}: {err.strerror or err}") from err
        listening = f"tcp://{uri.hostname}:{self.port}" if uri.scheme == "tcp" else self.settings.uri
        _LOGGER.info("Wyoming server listening on %s (pid %d)", listening, os.getpid())

        if self.settings.zeroconf and uri.scheme == "tcp":
            self._advertiser = ZeroconfAdvertiser(
                self.settings.zeroconf,
                self.port or 0,
                advertised_addresses(uri.hostname or ""),
                self.settings.zeroconf_interfaces,
            )
            await self._advertiser.start()
        if self.settings.http_port is not None:
            services = HttpServices(
                self.engine,
                self.tts,
                self.agent,
                self.settings.api_key,
                self.settings.max_audio_seconds,
                time.monotonic(),
                cors_origins=tuple(self.settings.cors_origins),
                rtc=RtcOptions(
                    tuple(self.settings.rtc_ice_servers),
                    None if self.settings.rtc_interfaces is None else tuple(self.settings.rtc_interfaces),
                    self.settings.rtc_ports,
                    self.settings.rtc_max_sessions,
                ),
            )
            host = uri.hostname if uri.scheme == "tcp" and uri.hostname else "0.0.0.0"
            try:
                self._http = await start_http(services, host, self.settings.http_port)
            except OSError as err:
                raise ConfigError(f"cannot listen on HTTP port {self.settings.http_port}: {err}") from err

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self._advertiser is not None:
            with contextlib.suppress(Exception):
                await self._advertiser.stop()
            self._advertiser = None
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self.engine is not None:
            await self.engine.close()
        if self.tts is not None:
            await self.tts.close()
        if self.llm is not None:
            await self.llm.close()

    async def __aenter__(self) -> WisServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
