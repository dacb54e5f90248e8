"""Settings: one object built from defaults, an optional JSON/YAML file, `WIS_*` variables and CLI flags.

Later sources win: defaults < file < environment < command line. Every value is validated with
voluptuous, and an error names the setting and where its value came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import voluptuous as vol
import yaml

from .engine.languages import WHISPER_LANGUAGES, normalise_language
from .errors import ConfigError

ENV_PREFIX = "WIS_"
DEFAULT_PORT = 10300
COMPUTE_TYPES = (
    "auto",
    "default",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "wis_wyoming"


@dataclass
class Settings:
    """Everything the server needs to start; see `SCHEMA` for the rules on each value."""

    uri: str = f"tcp://0.0.0.0:{DEFAULT_PORT}"
    models: list[str] = field(default_factory=lambda: ["tiny.en"])
    language: str | None = None
    beam_size: int = 5
    task: str = "transcribe"
    initial_prompt: str | None = None
    encoder_window: str = "auto"
    vad: bool = True
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0
    zeroconf: str | None = None
    zeroconf_interfaces: list[str] | None = None
    http_port: int | None = None
    rtc_ice_servers: list[str] = field(default_factory=list)  # stun:/turn: URLs for WebRTC; none on a LAN
    rtc_interfaces: list[str] | None = None  # addresses or interfaces for WebRTC media; None: all
    rtc_ports: tuple[int, int] | None = None  # UDP ports for WebRTC media; None: ephemeral
    rtc_max_sessions: int = 16
    cache_dir: Path = field(default_factory=default_cache_dir)
    hf_cache_dir: Path | None = None
    local_files_only: bool = False
    max_queue: int = 8
    max_batch: int = 8
    max_audio_seconds: float = 120.0
    stream_transcripts: bool = True
    vad_endpoint: bool = False
    tts: bool = True
    voice: str | None = None
    voices_dir: Path | None = None  # None: <cache_dir>/voices
    tts_cache_dir: Path | None = None  # None: <cache_dir>/tts
    tts_cache_mb: int = 1024  # 0 turns the cache off
    llm: str = "bundled"  # "bundled" (Gemma 3 270M), a GGUF path, "openai" (llm_url) or "none"
    llm_url: str | None = None  # OpenAI-compatible base URL, e.g. http://host:8000/v1
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_json_mode: str = "json_schema"
    llm_system_prompt: str | None = None
    llm_temperature: float = 0.7
    llm_top_p: float = 0.95
    llm_max_tokens: int = 256
    llm_timeout: float = 60.0
    llm_history: int = 6
    api_key: str | None = None  # wanted on every HTTP route but /api/ping when set
    cors_origins: list[str] = field(default_factory=list)  # web pages that may call the HTTP API; "*": any
    log_level: str = "INFO"

    @property
    def default_model(self) -> str:
        return self.models[0]

    @property
    def voices_path(self) -> Path:
        return self.voices_dir or self.cache_dir / "voices"

    @property
    def tts_cache_path(self) -> Path:
        return self.tts_cache_dir or self.cache_dir / "tts"


def _uri(value: Any) -> str:
    value = str(value)
    parsed = urlparse(value)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError as err:
            raise vol.Invalid(f"bad port in {value!r}") from err
        if not parsed.hostname or port is None:
            raise vol.Invalid(f"expected tcp://HOST:PORT, got {value!r}")
    elif parsed.scheme == "unix":
        if not parsed.path:
            raise vol.Invalid(f"expected unix:///path/to/socket, got {value!r}")
    else:
        raise vol.Invalid(f"expected tcp://HOST:PORT or unix://PATH, got {value!r}")
    return value


def _name_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple):
        raise vol.Invalid("expected a comma-separated list")
    names = [str(item).strip() for item in value if str(item).strip()]
    if not names:
        raise vol.Invalid("expected at least one name")
    return names


def _language(value: Any) -> str | None:
    code = normalise_language(None if value is None else str(value))
    if code is not None and code not in WHISPER_LANGUAGES:
        raise vol.Invalid(f"unknown language {value!r}; use a Whisper code such as en, de, fr, or auto")
    return code


def _device(value: Any) -> str:
    value = str(value).strip().lower()
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise vol.Invalid(f"expected auto, cpu, cuda or cuda:N, got {value!r}")


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _optional_interfaces(value: Any) -> list[str] | None:
    return None if value in (None, "", "all") else _name_list(value)


def _ice_servers(value: Any) -> list[str]:
    """stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT] (see transports/rtc_ice)."""
    if not value or value == "none":
        return []
    servers = _name_list(value)
    for server in servers:
        scheme, _, rest = server.partition(":")
        if scheme.lower() not in ("stun", "stuns", "turn", "turns") or not rest:
            raise vol.Invalid(f"expected stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT], got {server!r}")
    return servers


def _port_range(value: Any) -> tuple[int, int] | None:
    """LOW-HIGH (or [LOW, HIGH]), within 1024-65535."""
    if value in (None, "", "any"):
        return None
    if isinstance(value, str):
        value = value.replace(":", "-").split("-")
    try:
        low, high = (int(str(part).strip()) for part in value)
    except (TypeError, ValueError) as err:
        raise vol.Invalid(f"expected a UDP port range such as 40000-40100, got {value!r}") from err
    if not 1024 <= low <= high <= 65535:
        raise vol.Invalid(f"expected LOW-HIGH with 1024 <= LOW <= HIGH <= 65535, got {low}-{high}")
    return low, high


def _origins(value: Any) -> list[str]:
    """CORS origins: `*`, or scheme://host[:port] as a browser sends it in `Origin`."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple):
        raise vol.Invalid("expected a comma-separated list of origins")
    origins = []
    for item in value:
        origin = str(item).strip().rstrip("/").lower()
        if not origin:
            continue
        parsed = urlparse(origin)
        if origin != "*" and (
            parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path or parsed.query
        ):
            raise vol.Invalid(f"expected * or origins such as https://example.com:8123, got {item!r}")
        origins.append(origin)
    return origins


SCHEMA = vol.Schema(
    {
        vol.Required("uri"): _uri,
        vol.Required("models"): _name_list,
        vol.Required("language"): _language,
        vol.Required("beam_size"): vol.All(vol.Coerce(int), vol.Range(min=1, max=20)),
        vol.Required("task"): vol.In(("transcribe", "translate")),
        vol.Required("initial_prompt"): _optional_text,
        vol.Required("encoder_window"): vol.In(("auto", "adaptive", "padded")),
        vol.Required("vad"): vol.Boolean(),
        vol.Required("device"): _device,
        vol.Required("compute_type"): vol.In(COMPUTE_TYPES),
        vol.Required("cpu_threads"): vol.All(vol.Coerce(int), vol.Range(min=0, max=256)),
        vol.Required("zeroconf"): _optional_text,
        vol.Required("zeroconf_interfaces"): _optional_interfaces,
        vol.Required("http_port"): vol.Any(None, vol.All(vol.Coerce(int), vol.Range(min=1, max=65535))),
        vol.Required("rtc_ice_servers"): _ice_servers,
        vol.Required("rtc_interfaces"): _optional_interfaces,
        vol.Required("rtc_ports"): _port_range,
        vol.Required("rtc_max_sessions"): vol.All(vol.Coerce(int), vol.Range(min=1, max=10_000)),
        vol.Required("cache_dir"): vol.All(str, vol.Length(min=1), vol.Coerce(Path)),
        vol.Required("hf_cache_dir"): vol.Any(None, vol.All(str, vol.Length(min=1), vol.Coerce(Path))),
        vol.Required("local_files_only"): vol.Boolean(),
        vol.Required("max_queue"): vol.All(vol.Coerce(int), vol.Range(min=1, max=10_000)),
        vol.Required("max_batch"): vol.All(vol.Coerce(int), vol.Range(min=1, max=64)),
        vol.Required("max_audio_seconds"): vol.All(vol.Coerce(float), vol.Range(min=1.0, max=86_400.0)),
        vol.Required("stream_transcripts"): vol.Boolean(),
        vol.Required("vad_endpoint"): vol.Boolean(),
        vol.Required("tts"): vol.Boolean(),
        vol.Required("voice"): _optional_text,
        vol.Required("voices_dir"): vol.Any(None, vol.All(str, vol.Length(min=1), vol.Coerce(Path))),
        vol.Required("tts_cache_dir"): vol.Any(None, vol.All(str, vol.Length(min=1), vol.Coerce(Path))),
        vol.Required("tts_cache_mb"): vol.All(vol.Coerce(int), vol.Range(min=0, max=1_000_000)),
        vol.Required("llm"): vol.All(str, vol.Length(min=1)),
        vol.Required("llm_url"): vol.Any(None, vol.All(str, vol.Match(r"^https?://"))),
        vol.Required("llm_model"): _optional_text,
        vol.Required("llm_api_key"): _optional_text,
        vol.Required("llm_json_mode"): vol.In(("json_schema", "json_object")),
        vol.Required("llm_system_prompt"): _optional_text,
        vol.Required("llm_temperature"): vol.All(vol.Coerce(float), vol.Range(min=0.0, max=2.0)),
        vol.Required("llm_top_p"): vol.All(vol.Coerce(float), vol.Range(min=0.0, max=1.0)),
        vol.Required("llm_max_tokens"): vol.All(vol.Coerce(int), vol.Range(min=1, max=8192)),
        vol.Required("llm_timeout"): vol.All(vol.Coerce(float), vol.Range(min=1.0, max=3600.0)),
        vol.Required("llm_history"): vol.All(vol.Coerce(int), vol.Range(min=0, max=100)),
        vol.Required("api_key"): _optional_text,
        vol.Required("cors_origins"): _origins,
        vol.Required("log_level"): vol.All(vol.Upper, vol.In(("DEBUG", "INFO", "WARNING", "ERROR"))),
    }
)

SETTING_NAMES = tuple(f.name for f in fields(Settings))


@dataclass
class ResolvedSettings:
    settings: Settings
    sources: dict[str, str]  # setting name -> "default", "file <path>", "env WIS_X" or "command line"

    def describe(self) -> list[str]:
        """One line per setting, for the start-up log."""
        return [f"{name} = {getattr(self.settings, name)!r} ({self.sources[name]})" for name in SETTING_NAMES]


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML mapping; keys may use dashes or underscores."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid JSON/YAML: {err}") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(loaded).__name__}")
    values = {str(key).replace("-", "_"): value for key, value in loaded.items()}
    unknown = sorted(set(values) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} in {path}; known: {', '.join(SETTING_NAMES)}"
        )
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        name: environ[f"{ENV_PREFIX}{name.upper()}"]
        for name in SETTING_NAMES
        if f"{ENV_PREFIX}{name.upper()}" in environ
    }


def resolve_settings(
    cli_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> ResolvedSettings:
    """Merge the sources, validate the result and say where each value came from."""
    environ = os.environ if environ is None else environ
    defaults = Settings()
    merged: dict[str, Any] = {name: getattr(defaults, name) for name in SETTING_NAMES}
    merged["cache_dir"] = str(merged["cache_dir"])
    sources = dict.fromkeys(SETTING_NAMES, "default")

    if config_file is None and environ.get(f"{ENV_PREFIX}CONFIG"):
        config_file = Path(environ[f"{ENV_PREFIX}CONFIG"])
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((f"file {config_file}", read_config_file(config_file)))
    layers.append(("env", read_environment(environ)))
    layers.append(("command line", dict(cli_values or {})))

    for label, values in layers:
        for name, value in values.items():
            if name not in merged:
                raise ConfigError(f"unknown setting {name!r}")
            merged[name] = value
            sources[name] = f"env {ENV_PREFIX}{name.upper()}" if label == "env" else label

    try:
        validated = SCHEMA(merged)
    except vol.MultipleInvalid as err:
        problems = []
        for error in err.errors:
            name = str(error.path[0]) if error.path else "?"
            problems.append(f"{name} = {merged.get(name)!r} ({sources.get(name, '?')}): {error.msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from err
    return ResolvedSettings(Settings(**validated), sources)
