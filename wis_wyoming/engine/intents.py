"""Home Assistant intents from free text, by constrained decoding.

The model is held to a JSON schema (an intent name from a fixed list, and typed slots), so its
output always parses; what it fills in is then checked again here: an intent that lacks a slot
it needs, or "none", is not recognised. A 270M model gets some wrong: `bench/intents.py`
measures how many on a labelled set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .llm import GenerationOptions, LlmBackend, LlmError, complete


@dataclass(frozen=True)
class IntentSpec:
    description: str
    required: tuple[str, ...] = ()


# Home Assistant's built-in intent names and the slots each needs.
INTENTS: dict[str, IntentSpec] = {
    "HassTurnOn": IntentSpec("turn a device or area on (lights, switches, fans)", ("name",)),
    "HassTurnOff": IntentSpec("turn a device or area off", ("name",)),
    "HassLightSet": IntentSpec("set a light's brightness (percent) or color", ("name",)),
    "HassGetState": IntentSpec("ask whether a device is on, off, open, locked, ...", ("name",)),
    "HassStartTimer": IntentSpec("start a timer for a duration", ("duration_seconds",)),
    "HassCancelTimer": IntentSpec("cancel a timer"),
    "HassPauseTimer": IntentSpec("pause a timer"),
    "HassClimateSetTemperature": IntentSpec("set the thermostat temperature", ("temperature",)),
    "HassClimateGetTemperature": IntentSpec("ask for the temperature"),
    "HassShoppingListAddItem": IntentSpec("add an item to the shopping list", ("item",)),
    "HassUnpauseTimer": IntentSpec("resume a paused timer"),
    "HassTimerStatus": IntentSpec("ask how much time is left on a timer"),
    "HassMediaPause": IntentSpec("pause music or media"),
    "HassMediaUnpause": IntentSpec("resume music or media"),
    "HassMediaNext": IntentSpec("skip to the next track"),
    "HassGetCurrentTime": IntentSpec("ask what time it is"),
    "HassGetCurrentDate": IntentSpec("ask for today's date"),
    "HassNevermind": IntentSpec("cancel the request, never mind"),
    "HassGetWeather": IntentSpec("ask about the weather"),
}
SLOTS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "maxLength": 60},
    "area": {"type": "string", "maxLength": 60},
    "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
    "color": {"type": "string", "maxLength": 30},
    "temperature": {"type": "number", "minimum": -50, "maximum": 100},
    "duration_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
    "item": {"type": "string", "maxLength": 80},
}
NO_INTENT = "none"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"intent": {"type": "string", "enum": [*INTENTS, NO_INTENT]}, **SLOTS},
    "required": ["intent"],
    "additionalProperties": False,
}
# Shown to the model as earlier turns of the dialogue (phrasings of our own, none of them from
# the benchmark's labelled set).
EXAMPLES = [
    ("switch on the porch light", {"intent": "HassTurnOn", "name": "porch light"}),
    ("shut off the fan in the bedroom", {"intent": "HassTurnOff", "name": "fan", "area": "bedroom"}),
    ("make the desk lamp 30 percent", {"intent": "HassLightSet", "name": "desk lamp", "brightness": 30}),
    ("change the hall light to blue", {"intent": "HassLightSet", "name": "hall light", "color": "blue"}),
    ("is the back door closed", {"intent": "HassGetState", "name": "back door"}),
    ("start a 10 minute timer", {"intent": "HassStartTimer", "duration_seconds": 600}),
    ("stop the timer", {"intent": "HassCancelTimer"}),
    ("hold the timer", {"intent": "HassPauseTimer"}),
    ("continue the timer", {"intent": "HassUnpauseTimer"}),
    ("how long is left on the timer", {"intent": "HassTimerStatus"}),
    ("put bread on the shopping list", {"intent": "HassShoppingListAddItem", "item": "bread"}),
    ("make it 19 degrees in here", {"intent": "HassClimateSetTemperature", "temperature": 19}),
    ("how warm is it inside", {"intent": "HassClimateGetTemperature"}),
    ("stop the music", {"intent": "HassMediaPause"}),
    ("play again", {"intent": "HassMediaUnpause"}),
    ("next song", {"intent": "HassMediaNext"}),
    ("forget it", {"intent": "HassNevermind"}),
    ("is it going to rain", {"intent": "HassGetWeather"}),
    ("tell me the time", {"intent": "HassGetCurrentTime"}),
    ("which day is it today", {"intent": "HassGetCurrentDate"}),
    ("who painted the Mona Lisa", {"intent": NO_INTENT}),
    ("write me a poem", {"intent": NO_INTENT}),
]


@dataclass(frozen=True)
class RecognizedIntent:
    name: str
    entities: dict[str, Any]


def intent_messages(text: str) -> list[dict[str, str]]:
    """The intent list as instructions, the examples as earlier turns, then the command."""
    lines = ["Map each smart home command to one Home Assistant intent, as JSON. Intents:"]
    lines += [f"- {name}: {spec.description}" for name, spec in INTENTS.items()]
    lines.append(f"- {NO_INTENT}: anything else. Slots: {', '.join(SLOTS)}.")
    messages = [{"role": "system", "content": "\n".join(lines)}]
    for example, answer in EXAMPLES:
        messages.append({"role": "user", "content": example})
        messages.append({"role": "assistant", "content": json.dumps(answer)})
    messages.append({"role": "user", "content": text})
    return messages


def parse_intent(output: str) -> RecognizedIntent | None:
    """The intent in a model's JSON answer, or None when it is "none", malformed or lacks a
    slot its intent needs."""
    try:
        answer = json.loads(output)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("intent") not in INTENTS:
        return None
    name = answer["intent"]
    entities = {}
    for slot, rule in SLOTS.items():
        value = answer.get(slot)
        if value is None or value == "":
            continue
        if rule["type"] == "string" and isinstance(value, str):
            entities[slot] = value.strip()
        elif rule["type"] != "string" and _number(value) and rule["minimum"] <= value <= rule["maximum"]:
            entities[slot] = int(value) if rule["type"] == "integer" else value
    if any(slot not in entities for slot in INTENTS[name].required):
        return None
    return RecognizedIntent(name, entities)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class IntentRecognizer:
    def __init__(self, backend: LlmBackend, timeout: float = 30.0) -> None:
        self.backend = backend
        # Deterministic: the same command gives the same intent.
        self.options = GenerationOptions(temperature=0.0, max_tokens=80, timeout=timeout, seed=0)

    async def recognize(self, text: str) -> RecognizedIntent | None:
        """The intent of `text`, None when it is not a command we know. LlmError on failure."""
        text = " ".join(text.split())[:500]
        if not text:
            return None
        output = await complete(self.backend, intent_messages(text), self.options, SCHEMA)
        return parse_intent(output)


__all__ = ["INTENTS", "IntentRecognizer", "LlmError", "RecognizedIntent", "parse_intent"]
