"""wis_wyoming: Whisper, Piper and an LLM for Home Assistant over Wyoming and HTTP."""

__version__ = "0.1.0"
