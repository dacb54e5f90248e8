"""Wyoming `handle` (a conversation agent) and `intent` programs on an LLM.

- `transcript` (text, `context.conversation_id`, language) → `handled-start`, a `handled-chunk`
  for each piece of the answer as the model writes it, `handled` with the whole answer (what
  clients that do not stream read) and `handled-stop`; `not-handled` with the reason when the
  model fails or times out.
- `recognize` → `intent` (a Home Assistant intent name and its entities) or `not-recognized`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from wyoming.event import Event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import Attribution, HandleModel, HandleProgram, IntentModel, IntentProgram
from wyoming.intent import Entity, Intent, NotRecognized

from .. import __version__
from ..engine.conversation import ConversationAgent
from ..engine.intents import IntentRecognizer
from ..engine.llm import LlmError
from ..errors import InvalidRequestError

_LOGGER = logging.getLogger(__name__)

HANDLE_PROGRAM_NAME = "wis-llm"
INTENT_PROGRAM_NAME = "wis-intents"
LLM_EVENTS = frozenset({"transcript", "recognize"})
ATTRIBUTION = Attribution(name="llama.cpp", url="https://github.com/ggml-org/llama.cpp")
LANGUAGES = ["en"]

WriteEvent = Callable[[Event], Awaitable[None]]


def _artifact(name: str, description: str) -> dict:
    """The fields every Wyoming program and model entry has."""
    return {
        "name": name,
        "attribution": ATTRIBUTION,
        "installed": True,
        "description": description,
        "version": __version__,
    }


def handle_program(agent: ConversationAgent) -> HandleProgram:
    model = HandleModel(**_artifact(agent.backend.name, agent.backend.name), languages=LANGUAGES)
    return HandleProgram(
        **_artifact(HANDLE_PROGRAM_NAME, "An LLM conversation agent, answers streamed as they are written"),
        models=[model],
        supports_handled_streaming=True,
    )


def intent_program(recognizer: IntentRecognizer) -> IntentProgram:
    name = recognizer.backend.name
    return IntentProgram(
        **_artifact(INTENT_PROGRAM_NAME, "Home Assistant intents by constrained decoding"),
        models=[IntentModel(**_artifact(name, name), languages=LANGUAGES)],
    )


def _text_of(event: Event) -> str:
    text = event.data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError(f"{event.type} needs a non-empty 'text'")
    return text


def _context_of(event: Event) -> dict:
    context = event.data.get("context") or {}
    if not isinstance(context, dict):
        raise InvalidRequestError("'context' must be an object")
    return context


class LlmSession:
    """The handle and intent events of one connection."""

    def __init__(
        self, agent: ConversationAgent | None, recognizer: IntentRecognizer | None, write_event: WriteEvent
    ) -> None:
        self.agent = agent
        self.recognizer = recognizer
        self._write = write_event

    async def handle(self, event: Event) -> None:
        if event.type == "transcript":
            await self._answer(event)
        else:
            await self._recognize(event)

    async def _answer(self, event: Event) -> None:
        if self.agent is None:
            raise InvalidRequestError("no conversation agent is enabled on this server")
        text, context = _text_of(event), _context_of(event)
        conversation_id = context.get("conversation_id")
        language = event.data.get("language")
        await self._write(HandledStart(context=context).event())
        pieces = []
        try:
            async for piece in self.agent.reply(
                text,
                str(conversation_id) if conversation_id is not None else None,
                language if isinstance(language, str) else None,
            ):
                pieces.append(piece)
                await self._write(HandledChunk(text=piece).event())
        except LlmError as err:
            _LOGGER.warning("Not handled: %s", err)
            await self._write(NotHandled(text=str(err), context=context).event())
            await self._write(HandledStop().event())
            return
        await self._write(Handled(text="".join(pieces).strip(), context=context).event())
        await self._write(HandledStop().event())

    async def _recognize(self, event: Event) -> None:
        if self.recognizer is None:
            raise InvalidRequestError("no intent recognizer is enabled on this server")
        text, context = _text_of(event), _context_of(event)
        try:
            intent = await self.recognizer.recognize(text)
        except LlmError as err:
            _LOGGER.warning("Not recognized: %s", err)
            await self._write(NotRecognized(text=str(err), context=context).event())
            return
        if intent is None:
            await self._write(NotRecognized(text=text, context=context).event())
            return
        entities = [Entity(name=name, value=value) for name, value in intent.entities.items()]
        await self._write(Intent(name=intent.name, entities=entities, text=text, context=context).event())


def is_llm_event(event_type: str) -> bool:
    return event_type in LLM_EVENTS
