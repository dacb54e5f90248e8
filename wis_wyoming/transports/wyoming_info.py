"""The Wyoming `info` answer: one ASR program listing every model with its languages."""

from __future__ import annotations

from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Info

from .. import __version__
from ..engine.asr import AsrEngine

ASR_PROGRAM_NAME = "wis-wyoming"
PROJECT_ATTRIBUTION = Attribution(name="wis_wyoming", url="https://github.com/wis-wyoming/wis_wyoming")


def build_info(engine: AsrEngine, streaming: bool = True, requires_external_vad: bool = True) -> Info:
    models = [
        AsrModel(
            name=model.name,
            attribution=Attribution(name=model.attribution[0], url=model.attribution[1]),
            installed=model.installed,
            description=model.description,
            version=model.version,
            languages=list(model.languages),
        )
        for model in engine.catalogue()
    ]
    program = AsrProgram(
        name=ASR_PROGRAM_NAME,
        attribution=PROJECT_ATTRIBUTION,
        installed=True,
        description="Whisper speech-to-text on CTranslate2, several models resident, chosen per request",
        version=__version__,
        models=models,
        supports_transcript_streaming=streaming,
        requires_external_vad=requires_external_vad,
        # Silero VAD trims and gates the audio here; Whisper wants the voice as it was.
        prefers_auto_gain_enabled=False,
        prefers_noise_reduction_enabled=False,
    )
    return Info(asr=[program])


def info_event(engine: AsrEngine, streaming: bool = True, requires_external_vad: bool = True) -> Event:
    """The info event, plus a `wis` block (ignored by other clients) saying what is resident."""
    event = build_info(engine, streaming, requires_external_vad).event()
    event.data["wis"] = {
        "version": __version__,
        "default_model": engine.defaults.model,
        "resident": sorted(engine.resident),
        "device": engine.plan.describe(),
    }
    return event
