"""Model registry: names to CTranslate2 Whisper model directories.

A name is one of: a bundled model (`tiny.en`, `base`), a local directory (optionally named as
`name=/path`), or a standard faster-whisper name / Hugging Face repo id resolved through the HF
cache. Downloads happen only when `local_files_only` is off; tests and offline installs never
download.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from faster_whisper.utils import available_models, download_model

from ..errors import ModelLoadError, UnknownModelError
from .bundled import BUNDLED_MODELS
from .languages import WHISPER_LANGUAGES

_LOGGER = logging.getLogger(__name__)

# Whisper's vocabulary: 51864 tokens for English-only models, 51865 + (languages - 99) otherwise.
_ENGLISH_ONLY_VOCABULARY = 51864
_WHISPER_ATTRIBUTION = ("OpenAI", "https://github.com/openai/whisper")


@dataclass(frozen=True)
class ModelInfo:
    """What is known of a model without loading it."""

    name: str
    path: Path | None  # None until prepared or downloaded
    origin: str  # "bundled", "local", "hf-cache" or "hub"
    languages: tuple[str, ...]
    description: str
    version: str | None = None
    attribution: tuple[str, str] = _WHISPER_ATTRIBUTION

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > 1

    @property
    def installed(self) -> bool:
        return self.origin in ("bundled", "local", "hf-cache")


def languages_of(model_dir: Path) -> tuple[str, ...]:
    """The languages a CTranslate2 Whisper directory supports, read from its vocabulary size."""
    if (model_dir / "vocabulary.json").is_file():
        size = len(json.loads((model_dir / "vocabulary.json").read_text(encoding="utf-8")))
    elif (model_dir / "vocabulary.txt").is_file():
        with (model_dir / "vocabulary.txt").open(encoding="utf-8") as vocabulary:
            size = sum(1 for _ in vocabulary)
    else:
        raise ModelLoadError(f"{model_dir} has no vocabulary.json or vocabulary.txt")
    if size <= _ENGLISH_ONLY_VOCABULARY:
        return ("en",)
    return WHISPER_LANGUAGES[: 99 + size - (_ENGLISH_ONLY_VOCABULARY + 1)]


def languages_from_name(name: str) -> tuple[str, ...]:
    """Languages of a model known only by name (not prepared or downloaded yet)."""
    if name.endswith(".en"):
        return ("en",)
    # large-v3 and its turbo variant added Cantonese as a 100th language.
    return WHISPER_LANGUAGES[: 100 if "large-v3" in name or "turbo" in name else 99]


def check_model_dir(path: Path) -> Path:
    missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        # Without tokenizer.json faster-whisper would fetch a tokenizer from the hub at load time.
        raise ModelLoadError(f"{path} is not a CTranslate2 Whisper model: missing {', '.join(missing)}")
    return path


def parse_model_spec(spec: str) -> tuple[str, Path | None]:
    """`name`, `name=/path/to/dir` or `/path/to/dir` -> (name, local path or None)."""
    if "=" in spec:
        name, _, path = spec.partition("=")
        return name.strip(), Path(path.strip()).expanduser()
    path = Path(spec).expanduser()
    if spec.startswith(("/", ".", "~")) or path.is_dir():
        return path.resolve().name, path
    return spec, None


class ModelRegistry:
    def __init__(
        self,
        cache_dir: Path,
        hf_cache_dir: Path | None = None,
        local_files_only: bool = False,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.hf_cache_dir = hf_cache_dir
        self.local_files_only = local_files_only
        self._local: dict[str, Path] = {}

    def add_spec(self, spec: str) -> str:
        """Register a `--models` entry; returns the name requests use for it."""
        name, path = parse_model_spec(spec)
        if path is not None:
            check_model_dir(path)
            self._local[name] = path.resolve()
        return name

    # --- what exists ------------------------------------------------------------------------

    def catalogue(self) -> list[ModelInfo]:
        """Every model usable without a download: bundled, local directories, HF-cached."""
        found = [self._bundled_info(name) for name, m in BUNDLED_MODELS.items() if m.is_installed()]
        found += [self._local_info(name) for name in self._local]
        taken = {info.name for info in found}
        for name in available_models():
            if name not in taken and (path := self._hf_cached(name)) is not None:
                found.append(self._hf_info(name, path, "hf-cache"))
        return found

    def describe(self, name: str) -> ModelInfo:
        """Info on one name without preparing or downloading anything."""
        if name in self._local:
            return self._local_info(name)
        if name in BUNDLED_MODELS and BUNDLED_MODELS[name].is_installed():
            return self._bundled_info(name)
        if (path := self._hf_cached(name)) is not None:
            return self._hf_info(name, path, "hf-cache")
        if self._downloadable(name):
            if self.local_files_only:
                raise UnknownModelError(
                    f"model {name!r} is not in the Hugging Face cache and downloads are off "
                    f"(local_files_only); available here: {self._available_names()}"
                )
            return ModelInfo(
                name, None, "hub", languages_from_name(name), f"Whisper {name}, from the Hugging Face hub"
            )
        raise UnknownModelError(
            f"unknown model {name!r}; available here: {self._available_names()}; "
            f"also accepted: a model directory, or one of {', '.join(available_models())}"
        )

    def resolve(self, name: str, progress: bool = False) -> ModelInfo:
        """Info with a usable `path`: prepares a bundled model or downloads if allowed."""
        info = self.describe(name)
        if info.path is not None:
            return info
        if info.origin == "bundled":
            path = BUNDLED_MODELS[name].prepare(self.cache_dir, progress)
            return ModelInfo(**{**info.__dict__, "path": path})
        _LOGGER.info("Downloading model %s from the Hugging Face hub", name)
        try:
            path = Path(download_model(name, cache_dir=self._hf_dir()))
        except Exception as err:  # the hub client raises many unrelated types
            raise ModelLoadError(f"cannot download model {name!r}: {err}") from err
        return self._hf_info(name, path, "hf-cache")

    # --- helpers ----------------------------------------------------------------------------

    def _available_names(self) -> str:
        return ", ".join(f"{i.name} ({i.origin})" for i in self.catalogue()) or "none"

    def _hf_dir(self) -> str | None:
        return str(self.hf_cache_dir) if self.hf_cache_dir else None

    def _downloadable(self, name: str) -> bool:
        return name in available_models() or name.count("/") == 1

    def _hf_cached(self, name: str) -> Path | None:
        if not self._downloadable(name):
            return None
        try:
            path = Path(download_model(name, local_files_only=True, cache_dir=self._hf_dir()))
        except Exception:  # not cached: the hub client raises its own LocalEntryNotFoundError
            return None
        return path if (path / "model.bin").is_file() else None

    def _bundled_info(self, name: str) -> ModelInfo:
        bundled = BUNDLED_MODELS[name]
        path = bundled.locate(self.cache_dir)
        return ModelInfo(
            name, path, "bundled", languages_from_name(name), bundled.description, bundled.version
        )

    def _local_info(self, name: str) -> ModelInfo:
        path = self._local[name]
        return ModelInfo(name, path, "local", languages_of(path), f"Whisper model from {path}")

    def _hf_info(self, name: str, path: Path, origin: str) -> ModelInfo:
        return ModelInfo(name, path, origin, languages_of(path), f"Whisper {name} (Hugging Face cache)")
