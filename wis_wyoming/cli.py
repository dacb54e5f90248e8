"""Command line: `wis-wyoming serve | transcribe | models`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from . import __version__
from .config import DEFAULT_PORT, ResolvedSettings, Settings, resolve_settings
from .errors import WisError

_LOGGER = logging.getLogger("wis_wyoming")
_SUPPRESS = argparse.SUPPRESS


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that loads models; unset flags leave the setting alone."""
    parser.add_argument(
        "--config", type=Path, default=None, help="JSON or YAML settings file (or WIS_CONFIG)"
    )
    parser.add_argument("--device", default=_SUPPRESS, help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--compute-type", default=_SUPPRESS, help="auto, int8, float16, ... (default auto)")
    parser.add_argument("--cpu-threads", default=_SUPPRESS, help="threads per model (default: all cores)")
    parser.add_argument("--cache-dir", default=_SUPPRESS, help="where bundled models are prepared")
    parser.add_argument("--hf-cache-dir", default=_SUPPRESS, help="Hugging Face cache to look in")
    parser.add_argument(
        "--local-files-only", action="store_const", const=True, default=_SUPPRESS, help="never download"
    )
    parser.add_argument(
        "--encoder-window",
        default=_SUPPRESS,
        choices=["auto", "adaptive", "padded"],
        help="encode only the spoken frames (adaptive), Whisper's full 30 s (padded), "
        "or adaptive for English-only models only (auto, default)",
    )
    parser.add_argument(
        "--no-vad",
        dest="vad",
        action="store_const",
        const=False,
        default=_SUPPRESS,
        help="transcribe all audio, silence included (default: Silero VAD refuses silence and trims it)",
    )
    parser.add_argument("--log-level", default=_SUPPRESS, help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--debug", dest="log_level", action="store_const", const="DEBUG", default=_SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wis-wyoming",
        description="Whisper speech-to-text for Home Assistant over Wyoming.",
        epilog="Every serve setting can also come from WIS_<NAME> (e.g. WIS_BEAM_SIZE) or a --config file.",
    )
    parser.add_argument("--version", action="version", version=f"wis-wyoming {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the Wyoming server")
    serve.add_argument(
        "--uri", default=_SUPPRESS, help=f"tcp://HOST:PORT or unix://PATH (tcp://0.0.0.0:{DEFAULT_PORT})"
    )
    serve.add_argument(
        "--models", default=_SUPPRESS, help="resident models, first is the default: tiny.en,base"
    )
    serve.add_argument("--language", default=_SUPPRESS, help="default language, or auto to detect")
    serve.add_argument("--beam-size", default=_SUPPRESS, help="default beam size (5)")
    serve.add_argument("--task", default=_SUPPRESS, choices=["transcribe", "translate"])
    serve.add_argument("--initial-prompt", default=_SUPPRESS, help="default prompt to bias the decoder")
    serve.add_argument(
        "--zeroconf", nargs="?", const="wis-wyoming", default=_SUPPRESS, help="advertise over mDNS [as NAME]"
    )
    serve.add_argument("--zeroconf-interfaces", default=_SUPPRESS, help="interface addresses for mDNS")
    serve.add_argument("--http-port", default=_SUPPRESS, help="HTTP API port (WIS-compatible; e.g. 19000)")
    serve.add_argument(
        "--rtc-ice-servers",
        default=_SUPPRESS,
        help="STUN/TURN servers for WebRTC: stun:HOST[:PORT],turn:USER:PASSWORD@HOST[:PORT] (none)",
    )
    serve.add_argument(
        "--rtc-interfaces", default=_SUPPRESS, help="addresses or interfaces WebRTC media may use (all)"
    )
    serve.add_argument("--rtc-ports", default=_SUPPRESS, help="UDP port range for WebRTC media: LOW-HIGH")
    serve.add_argument("--rtc-max-sessions", default=_SUPPRESS, help="open WebRTC sessions at most (16)")
    serve.add_argument("--api-key", default=_SUPPRESS, help="key the HTTP API wants (X-API-Key or Bearer)")
    serve.add_argument(
        "--cors-origins", default=_SUPPRESS, help="web origins that may call the HTTP API: a,b or *"
    )
    serve.add_argument("--max-queue", default=_SUPPRESS, help="requests in flight per model before refusing")
    serve.add_argument(
        "--max-batch", default=_SUPPRESS, help="passes of concurrent requests decoded together (1: none)"
    )
    serve.add_argument("--max-audio-seconds", default=_SUPPRESS, help="longest audio stream accepted")
    serve.add_argument(
        "--no-stream-transcripts",
        dest="stream_transcripts",
        action="store_const",
        const=False,
        default=_SUPPRESS,
        help="send only the final transcript (default: transcript-start/chunk/stop while audio arrives)",
    )
    serve.add_argument(
        "--vad-endpoint",
        action="store_const",
        const=True,
        default=_SUPPRESS,
        help="end voice commands on the server: the transcript is sent when the speaker stops, "
        "without waiting for audio-stop (advertises requires_external_vad=false)",
    )
    serve.add_argument(
        "--no-tts", dest="tts", action="store_const", const=False, default=_SUPPRESS, help="no text to speech"
    )
    serve.add_argument("--voice", default=_SUPPRESS, help="default Piper voice (en_US-joe-medium)")
    serve.add_argument(
        "--voices-dir", default=_SUPPRESS, help="directory of <name>.onnx + <name>.onnx.json Piper voices"
    )
    serve.add_argument("--tts-cache-dir", default=_SUPPRESS, help="where spoken sentences are cached")
    serve.add_argument("--tts-cache-mb", default=_SUPPRESS, help="TTS cache size bound (1024; 0: off)")
    serve.add_argument(
        "--llm", default=_SUPPRESS, help="bundled (Gemma 3 270M), a GGUF file, openai (see --llm-url) or none"
    )
    serve.add_argument("--llm-url", default=_SUPPRESS, help="OpenAI-compatible base URL (vLLM, Ollama, ...)")
    serve.add_argument("--llm-model", default=_SUPPRESS, help="model name for --llm-url")
    serve.add_argument("--llm-api-key", default=_SUPPRESS, help="API key for --llm-url")
    serve.add_argument("--llm-json-mode", default=_SUPPRESS, help="json_schema (default) or json_object")
    serve.add_argument("--llm-system-prompt", default=_SUPPRESS, help="the conversation agent's instructions")
    serve.add_argument("--llm-temperature", default=_SUPPRESS, help="sampling temperature (0.7)")
    serve.add_argument("--llm-top-p", default=_SUPPRESS, help="nucleus sampling (0.95)")
    serve.add_argument("--llm-max-tokens", default=_SUPPRESS, help="longest answer in tokens (256)")
    serve.add_argument("--llm-timeout", default=_SUPPRESS, help="seconds before not-handled (60)")
    serve.add_argument("--llm-history", default=_SUPPRESS, help="exchanges remembered per conversation (6)")
    _engine_flags(serve)

    transcribe = commands.add_parser("transcribe", help="transcribe audio files and print the text")
    transcribe.add_argument("files", nargs="+", type=Path)
    transcribe.add_argument("--model", dest="models", default=_SUPPRESS, help="model name or directory")
    transcribe.add_argument("--language", default=_SUPPRESS)
    transcribe.add_argument("--task", default=_SUPPRESS, choices=["transcribe", "translate"])
    transcribe.add_argument("--beam", dest="beam_size", default=_SUPPRESS)
    transcribe.add_argument("--initial-prompt", default=_SUPPRESS)
    transcribe.add_argument("--json", action="store_true", help="segments and timings as JSON")
    _engine_flags(transcribe)

    models = commands.add_parser("models", help="list resident, bundled and cached models")
    models.add_argument(
        "--uri", default=f"tcp://127.0.0.1:{DEFAULT_PORT}", help="ask this server what is resident"
    )
    models.add_argument("--prepare", action="store_true", help="prepare the bundled models now")
    models.add_argument("--json", action="store_true")
    _engine_flags(models)
    return parser


_NOT_SETTINGS = ("command", "config", "files", "json", "prepare")


def _resolve(args: argparse.Namespace) -> ResolvedSettings:
    values = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
    if args.command == "models":
        values.pop("uri", None)
    return resolve_settings(values, config_file=args.config)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # faster-whisper logs every request at INFO; our own request line says more.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolved = _resolve(args)
        quiet = args.command != "serve" and resolved.sources["log_level"] == "default"
        _setup_logging("WARNING" if quiet else resolved.settings.log_level)
        if args.command == "serve":
            return _serve(resolved)
        if args.command == "transcribe":
            return asyncio.run(_transcribe(resolved.settings, args.files, args.json))
        return asyncio.run(_models(resolved.settings, args.uri, args.prepare, args.json))
    except WisError as err:
        print(f"wis-wyoming: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# --- serve ---------------------------------------------------------------------------------------


def _serve(resolved: ResolvedSettings) -> int:
    from .app import WisServer

    _LOGGER.info("wis-wyoming %s starting with:", __version__)
    for line in resolved.describe():
        _LOGGER.info("  %s", line)

    async def run() -> None:
        server = WisServer(resolved.settings, progress=sys.stderr.isatty())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
            await stop.wait()
            _LOGGER.info("Shutting down")
        finally:
            await server.stop()

    asyncio.run(run())
    return 0


# --- transcribe ----------------------------------------------------------------------------------


async def _transcribe(settings: Settings, files: list[Path], as_json: bool) -> int:
    from .app import build_engine
    from .engine.asr import TranscriptionOptions
    from .engine.audio import decode_file

    engine, names = build_engine(replace(settings, models=settings.models[:1]))
    try:
        await engine.preload(names, progress=sys.stderr.isatty())
        results = []
        for path in files:
            audio = decode_file(path)
            result = await engine.transcribe(audio, TranscriptionOptions())
            if as_json:
                results.append({"file": str(path), **asdict(result)})
            elif len(files) > 1:
                print(f"{path}: {result.text}", flush=True)
            else:
                print(result.text, flush=True)
        if as_json:
            print(json.dumps(results if len(files) > 1 else results[0], indent=2, ensure_ascii=False))
    finally:
        await engine.close()
    return 0


# --- models --------------------------------------------------------------------------------------


async def _resident_on(uri: str) -> dict[str, Any] | None:
    """The `wis` block of a running server's info, or None if none answers."""
    from wyoming.client import AsyncClient
    from wyoming.info import Describe

    try:
        async with asyncio.timeout(2.0), AsyncClient.from_uri(uri) as client:
            await client.write_event(Describe().event())
            while (event := await client.read_event()) is not None:
                if event.type == "info":
                    return event.data.get("wis") or {"resident": [], "note": "not a wis-wyoming server"}
    except (OSError, TimeoutError, ValueError):
        return None
    return None


async def _models(settings: Settings, uri: str, prepare: bool, as_json: bool) -> int:
    from .engine.bundled import BUNDLED_MODELS
    from .engine.models import ModelRegistry

    registry = ModelRegistry(settings.cache_dir, settings.hf_cache_dir, settings.local_files_only)
    if prepare:
        for name, bundled in BUNDLED_MODELS.items():
            started = time.perf_counter()
            path = bundled.prepare(settings.cache_dir, sys.stderr.isatty())
            print(f"prepared {name} in {time.perf_counter() - started:.1f} s: {path}", file=sys.stderr)
        from .engine.llm import bundled_gguf

        started = time.perf_counter()
        gguf = bundled_gguf(settings.cache_dir)
        print(f"prepared the bundled LLM in {time.perf_counter() - started:.1f} s: {gguf}", file=sys.stderr)
    catalogue = registry.catalogue()
    server = await _resident_on(uri)
    if as_json:
        report = {
            "models": [
                {
                    "name": m.name,
                    "origin": m.origin,
                    "path": str(m.path) if m.path else None,
                    "languages": len(m.languages),
                    "version": m.version,
                }
                for m in catalogue
            ],
            "server": {"uri": uri, **server} if server else None,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'MODEL':<16} {'ORIGIN':<9} {'LANGS':>5}  PATH")
    for m in catalogue:
        where = str(m.path) if m.path else "not prepared yet (wis-wyoming models --prepare)"
        print(f"{m.name:<16} {m.origin:<9} {len(m.languages):>5}  {where}")
    if server is None:
        print(f"\nresident: no server answered at {uri}")
    else:
        print(f"\nresident on {uri}: {', '.join(server.get('resident', [])) or 'none'}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
