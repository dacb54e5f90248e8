"""A conversation agent on an LLM: a system prompt, and a bounded history per conversation.

Home Assistant sends each utterance with a `conversation_id`; the agent remembers the last
`history_turns` exchanges of each conversation (and at most `max_conversations` of them, the
least recently used forgotten first), so "and in the kitchen?" follows on from the question
before. An answer enters the history only once it is complete.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..errors import InvalidRequestError
from .llm import GenerationOptions, LlmBackend, Message, stream_within

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant in a smart home. Answer in one to three short sentences "
    "of plain spoken language: no lists, no markdown, no emoji."
)
MAX_INPUT_CHARS = 4000


@dataclass(frozen=True)
class AgentSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_turns: int = 6  # exchanges remembered per conversation
    max_conversations: int = 256
    generation: GenerationOptions = field(default_factory=GenerationOptions)


class ConversationAgent:
    def __init__(self, backend: LlmBackend, settings: AgentSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or AgentSettings()
        self._histories: OrderedDict[str, deque[Message]] = OrderedDict()

    def history(self, conversation_id: str) -> list[Message]:
        return list(self._histories.get(conversation_id, ()))

    async def reply(
        self, text: str, conversation_id: str | None = None, language: str | None = None
    ) -> AsyncIterator[str]:
        """The answer to `text`, piece by piece as the model writes it. LlmError when the
        backend fails or takes longer than the generation timeout."""
        text = text.strip()
        if not text:
            raise InvalidRequestError("there is no text to answer")
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidRequestError(f"text is longer than {MAX_INPUT_CHARS} characters")
        system = self.settings.system_prompt
        if language and not language.lower().startswith("en"):
            system += f" Answer in the language with code {language}."
        messages: list[Message] = [{"role": "system", "content": system}]
        if conversation_id:
            messages += self.history(conversation_id)
        messages.append({"role": "user", "content": text})

        pieces: list[str] = []
        async for piece in stream_within(self.backend, messages, self.settings.generation):
            pieces.append(piece)
            yield piece
        if conversation_id:
            self._remember(conversation_id, text, "".join(pieces).strip())

    def _remember(self, conversation_id: str, question: str, answer: str) -> None:
        history = self._histories.pop(conversation_id, None)
        if history is None:
            history = deque(maxlen=2 * self.settings.history_turns)
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": answer})
        self._histories[conversation_id] = history
        while len(self._histories) > self.settings.max_conversations:
            self._histories.popitem(last=False)
