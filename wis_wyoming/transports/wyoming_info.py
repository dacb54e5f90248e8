"""The Wyoming `info` answer: one ASR program listing every model with its languages."""

from __future__ import annotations

from dataclasses import dataclass

from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker

from .. import __version__
from ..engine.asr import AsrEngine
from ..engine.conversation import ConversationAgent
from ..engine.intents import IntentRecognizer
from ..engine.tts import TtsEngine
from .wyoming_llm import handle_program, intent_program

ASR_PROGRAM_NAME = "wis-wyoming"
TTS_PROGRAM_NAME = "wis-piper"
PIPER_ATTRIBUTION = Attribution(name="Piper", url="https://github.com/OHF-Voice/piper1-gpl")
PROJECT_ATTRIBUTION = Attribution(name="wis_wyoming", url="https://github.com/wis-wyoming/wis_wyoming")


def tts_program(tts: TtsEngine) -> TtsProgram:
    voices = [
        TtsVoice(
            name=voice.name,
            attribution=PIPER_ATTRIBUTION,
            installed=True,
            description=f"{voice.name} ({voice.quality or 'piper'}{', bundled' if voice.bundled else ''})",
            version=None,
            languages=voice.languages,
            speakers=[TtsVoiceSpeaker(name=name) for name in voice.speakers] or None,
        )
        for voice in tts.catalogue.voices()
    ]
    return TtsProgram(
        name=TTS_PROGRAM_NAME,
        attribution=PIPER_ATTRIBUTION,
        installed=True,
        description="Piper text-to-speech, sentence by sentence, with a disk cache",
        version=__version__,
        voices=voices,
        supports_synthesize_streaming=True,
    )


@dataclass(frozen=True)
class Programs:
    """What the server offers besides speech to text."""

    tts: TtsEngine | None = None
    agent: ConversationAgent | None = None
    recognizer: IntentRecognizer | None = None


def build_info(
    engine: AsrEngine,
    streaming: bool = True,
    requires_external_vad: bool = True,
    programs: Programs | None = None,
) -> Info:
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
    programs = programs or Programs()
    return Info(
        asr=[program],
        tts=[tts_program(programs.tts)] if programs.tts is not None else [],
        handle=[handle_program(programs.agent)] if programs.agent is not None else [],
        intent=[intent_program(programs.recognizer)] if programs.recognizer is not None else [],
    )


def info_event(
    engine: AsrEngine,
    streaming: bool = True,
    requires_external_vad: bool = True,
    programs: Programs | None = None,
) -> Event:
    """The info event, plus a `wis` block (ignored by other clients) saying what is resident."""
    event = build_info(engine, streaming, requires_external_vad, programs).event()
    event.data["wis"] = {
        "version": __version__,
        "default_model": engine.defaults.model,
        "resident": sorted(engine.resident),
        "device": engine.plan.describe(),
    }
    return event
