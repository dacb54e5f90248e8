"""Model registry: bundled models, local directories, the HF cache, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wis_wyoming.engine.bundled import BASE_SHA256, BASE_SIZE, READY_MARKER
from wis_wyoming.engine.models import ModelRegistry, languages_of, parse_model_spec
from wis_wyoming.errors import ModelLoadError, UnknownModelError


def test_base_is_assembled_once_and_reused(tmp_path: Path):
    registry = ModelRegistry(tmp_path, local_files_only=True)
    assert registry.describe("base").path is None  # nothing prepared yet
    first = registry.resolve("base")
    model_bin = first.path / "model.bin"
    assert model_bin.stat().st_size == BASE_SIZE
    assert json.loads((first.path / READY_MARKER).read_text())["sha256"] == BASE_SHA256
    written = model_bin.stat().st_mtime_ns
    again = ModelRegistry(tmp_path, local_files_only=True).resolve("base")
    assert again.path == first.path
    assert model_bin.stat().st_mtime_ns == written  # not redone on a later start


def test_truncated_assembly_is_detected_and_rebuilt(tmp_path: Path):
    registry = ModelRegistry(tmp_path, local_files_only=True)
    path = registry.resolve("base").path
    with (path / "model.bin").open("r+b") as model_bin:
        model_bin.truncate(1000)
    assert registry.describe("base").path is None
    assert (registry.resolve("base").path / "model.bin").stat().st_size == BASE_SIZE


def test_catalogue_lists_bundled_models_with_languages(tmp_path: Path):
    catalogue = {m.name: m for m in ModelRegistry(tmp_path, local_files_only=True).catalogue()}
    assert catalogue["tiny.en"].languages == ("en",) and not catalogue["tiny.en"].multilingual
    assert catalogue["base"].multilingual and len(catalogue["base"].languages) == 99
    assert all(m.installed and m.origin == "bundled" for m in catalogue.values())


def test_local_directory_is_a_model_under_its_own_name(tmp_path: Path):
    registry = ModelRegistry(tmp_path, local_files_only=True)
    source = registry.resolve("tiny.en").path
    local = tmp_path / "my-whisper"
    shutil.copytree(source, local)
    assert registry.add_spec(str(local)) == "my-whisper"
    assert registry.add_spec(f"kitchen={local}") == "kitchen"
    info = registry.resolve("kitchen")
    assert info.origin == "local" and info.path == local and info.languages == ("en",)
    assert {"my-whisper", "kitchen"} <= {m.name for m in registry.catalogue()}


def test_directory_without_a_model_is_refused(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"missing model\.bin"):
        ModelRegistry(tmp_path).add_spec(str(tmp_path / "empty"))


def test_unknown_name_lists_what_exists(tmp_path: Path):
    with pytest.raises(UnknownModelError) as err:
        ModelRegistry(tmp_path, local_files_only=True).describe("whisper-xxl")
    message = str(err.value)
    assert "tiny.en (bundled)" in message and "base (bundled)" in message and "large-v3" in message


def test_standard_name_missing_from_the_hf_cache_is_refused_offline(tmp_path: Path):
    registry = ModelRegistry(tmp_path, hf_cache_dir=tmp_path / "hf", local_files_only=True)
    with pytest.raises(UnknownModelError, match="not in the Hugging Face cache"):
        registry.resolve("small")


def test_standard_name_found_in_the_hf_cache(tmp_path: Path):
    """A faster-whisper name resolves through the HF cache layout, offline."""
    source = ModelRegistry(tmp_path, local_files_only=True).resolve("tiny.en").path
    repo = tmp_path / "hf" / "models--Systran--faster-whisper-tiny.en"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    registry = ModelRegistry(tmp_path / "cache", hf_cache_dir=tmp_path / "hf", local_files_only=True)
    # tiny.en is bundled, so it wins; the HF copy is reachable by its repo id.
    assert registry.describe("tiny.en").origin == "bundled"
    info = registry.resolve("Systran/faster-whisper-tiny.en")
    assert info.origin == "hf-cache" and info.path == snapshot and info.languages == ("en",)


def test_languages_follow_the_vocabulary_size(tmp_path: Path):
    for size, expected in ((51864, 1), (51865, 99), (51866, 100)):
        (tmp_path / "vocabulary.json").write_text(json.dumps([str(i) for i in range(size)]))
        assert len(languages_of(tmp_path)) == expected
    assert languages_of(tmp_path)[-1] == "yue"


def test_model_spec_forms():
    assert parse_model_spec("base") == ("base", None)
    assert parse_model_spec("office=/models/small") == ("office", Path("/models/small"))
    assert parse_model_spec("/models/small")[0] == "small"


def test_a_model_still_on_the_hub_is_described_with_its_languages(tmp_path: Path):
    registry = ModelRegistry(tmp_path, hf_cache_dir=tmp_path / "hf", local_files_only=False)
    small = registry.describe("small")
    assert small.origin == "hub" and small.path is None and not small.installed
    assert small.multilingual and "de" in small.languages and len(small.languages) == 99
    assert registry.describe("medium.en").languages == ("en",)
    assert registry.describe("large-v3").languages[-1] == "yue"
