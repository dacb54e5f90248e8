"""Settings from defaults, a file, WIS_* variables and flags; validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from wis_wyoming.config import resolve_settings
from wis_wyoming.errors import ConfigError


def test_defaults_serve_tiny_en_on_port_10300():
    resolved = resolve_settings({}, environ={})
    assert resolved.settings.uri == "tcp://0.0.0.0:10300"
    assert resolved.settings.models == ["tiny.en"]
    assert resolved.settings.language is None
    assert set(resolved.sources.values()) == {"default"}


def test_command_line_beats_environment_beats_file(tmp_path: Path):
    config = tmp_path / "wis.yaml"
    config.write_text("beam-size: 2\nlanguage: de\nmodels: [base]\nmax_queue: 3\n")
    resolved = resolve_settings(
        {"beam_size": "4"},
        environ={"WIS_BEAM_SIZE": "3", "WIS_LANGUAGE": "fr", "WIS_LOCAL_FILES_ONLY": "true"},
        config_file=config,
    )
    settings = resolved.settings
    assert settings.beam_size == 4 and resolved.sources["beam_size"] == "command line"
    assert settings.language == "fr" and resolved.sources["language"] == "env WIS_LANGUAGE"
    assert settings.models == ["base"] and resolved.sources["models"] == f"file {config}"
    assert settings.max_queue == 3
    assert settings.local_files_only is True


def test_config_file_can_come_from_wis_config_and_be_json(tmp_path: Path):
    config = tmp_path / "wis.json"
    config.write_text('{"models": "tiny.en, base", "zeroconf": "kitchen"}')
    settings = resolve_settings({}, environ={"WIS_CONFIG": str(config)}).settings
    assert settings.models == ["tiny.en", "base"]
    assert settings.zeroconf == "kitchen"


def test_language_auto_means_detect_and_regional_tags_are_reduced():
    assert resolve_settings({"language": "auto"}, environ={}).settings.language is None
    assert resolve_settings({"language": "en-US"}, environ={}).settings.language == "en"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"beam_size": "0"}, "beam_size = '0' (command line)"),
        ({"uri": "http://x:1"}, "expected tcp://HOST:PORT"),
        ({"uri": "tcp://host"}, "expected tcp://HOST:PORT"),
        ({"language": "klingon"}, "unknown language 'klingon'"),
        ({"device": "gpu"}, "expected auto, cpu, cuda or cuda:N"),
        ({"compute_type": "int3"}, "compute_type"),
        ({"models": ","}, "expected at least one name"),
    ],
)
def test_invalid_values_are_explained(values, expected):
    with pytest.raises(ConfigError) as err:
        resolve_settings(values, environ={})
    assert expected in str(err.value)


def test_invalid_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"max_queue = 'lots' \(env WIS_MAX_QUEUE\)"):
        resolve_settings({}, environ={"WIS_MAX_QUEUE": "lots"})


def test_bad_config_files_are_explained(tmp_path: Path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("beam: 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*beam"):
        resolve_settings({}, environ={}, config_file=unknown)
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [tiny.en\n")
    with pytest.raises(ConfigError, match="not valid JSON/YAML"):
        resolve_settings({}, environ={}, config_file=broken)
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve_settings({}, environ={}, config_file=tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- tiny.en\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve_settings({}, environ={}, config_file=listing)
