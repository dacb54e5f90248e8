"""Whisper's language codes, without loading a model."""

# faster-whisper keeps the list in a private name; it is the tokenizer's own table, in token order
# (the order matters: a model with 99 languages knows the first 99).
from faster_whisper.tokenizer import _LANGUAGE_CODES

WHISPER_LANGUAGES: tuple[str, ...] = tuple(_LANGUAGE_CODES)

# "auto" and an empty string both mean: detect the language.
AUTO_LANGUAGE_WORDS = frozenset({"", "auto", "detect"})


def normalise_language(language: str | None) -> str | None:
    """Return a language code, or None for auto-detection."""
    if language is None:
        return None
    language = language.strip().lower()
    if language in AUTO_LANGUAGE_WORDS:
        return None
    # HA sends regional tags such as "en-US" or "pt_BR"; Whisper knows only the base language.
    return language.replace("_", "-").split("-")[0]
