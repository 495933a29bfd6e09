"""The local LLM: multi-turn chats, a system prompt, streamed tokens, tool calls mapped to intents.

Generation runs on the model manager's inference threads (INTERACTIVE), and
each token crosses to the event loop through a bounded queue as it is made.
Cancelling the consumer (barge-in) sets the engine's cancel flag, so the
thread stops at the next token and the model's lease is released at once.

Tool calls: the system prompt lists the vehicle intents as tools and asks for
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; a reply of that
form is parsed and mapped onto the intent catalog, so "it's freezing in here"
ends in the same climate intent as the rule "make it warmer". A small model
follows that format unreliably: an unparseable or unknown call is treated as
plain text, never executed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import KW_ONLY, InitVar, dataclass, field
from typing import TYPE_CHECKING, Any

from agent.voice.intents import IntentCatalog, IntentMatch

if TYPE_CHECKING:
    from models.manager import ModelManager

DEFAULT_SYSTEM_PROMPT = (
    "You are the voice assistant of a car. Answer in one or two short, plain sentences that are "
    "easy to listen to while driving. No lists, no markdown."
)
_TOOLS_PROMPT = (
    "\nTo operate the car, reply with only a tool call, for example "
    '<tool_call>{{"name": "climate.set_temperature", "arguments": {{"temperature": 21}}}}</tool_call>. '
    "Tools:\n{tools}"
)
_TOOL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)
_MAX_CONVERSATIONS = 32
#: "my name is Alice", "call me Bob": the user's name, kept per conversation
_TELLS_NAME = re.compile(
    r"\b(?:my name is|my name's|call me|i am called|i'm called)\s+([a-z][a-z'-]{1,30})\b", re.IGNORECASE
)
_ASKS_NAME = re.compile(
    r"\b(?:what(?:'s| is) my name|do you (?:know|remember) my name|who am i)\b", re.IGNORECASE
)
_NOT_NAMES = {"not", "a", "an", "the", "just", "so", "very", "no"}


@dataclass
class LlmTurn:
    """What one reply produced, filled in while it streams."""

    text: str = ""
    tokens: int = 0
    finish_reason: str = ""
    intent: IntentMatch | None = None
    first_token_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_tool_call(text: str, catalog: IntentCatalog | None) -> IntentMatch | None:
    """A tool call in ``text`` mapped onto an intent; None when absent, malformed or unknown."""
    if catalog is None:
        return None
    m = _TOOL_RE.search(text)
    raw = m.group(1) if m else (text.strip() if text.strip().startswith("{") else "")
    if not raw:
        return None
    try:
        call = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    args = call.get("arguments") or call.get("parameters") or {}
    if not isinstance(args, dict):
        return None
    return catalog.from_tool_call(call["name"], args, text)


def looks_like_tool_call(prefix: str) -> bool:
    """Whether a reply that starts like this may be a tool call (and must not be spoken yet)."""
    s = prefix.lstrip()
    return s.startswith("<tool") or (s.startswith("<") and len(s) < 11) or s.startswith("{")


@dataclass(eq=False, repr=False)
class LlmChat:
    """Chats with the local model; one history per conversation id (bounded).

    ``system_prompt`` (empty: ``DEFAULT_SYSTEM_PROMPT``) gains the catalog's intents as tools
    unless ``tools`` is False.
    """

    manager: ModelManager
    model: str = "smollm2-135m"
    _: KW_ONLY
    system_prompt: str = ""
    max_tokens: int = 96
    temperature: float = 0.2
    history_turns: int = 6
    catalog: IntentCatalog | None = None
    tools: InitVar[bool] = True
    _histories: OrderedDict[str, deque[dict[str, str]]] = field(default_factory=OrderedDict, init=False)
    #: what the user told about themselves, per conversation (a small model forgets it in a turn)
    _names: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self, tools: bool) -> None:
        prompt = self.system_prompt or DEFAULT_SYSTEM_PROMPT
        if tools and self.catalog is not None:
            prompt += _TOOLS_PROMPT.format(tools=self.catalog.tools_prompt())
        self.system_prompt = prompt

    def history(self, conversation: str) -> deque[dict[str, str]]:
        hist = self._histories.get(conversation)
        if hist is None:
            hist = self._histories[conversation] = deque(maxlen=2 * self.history_turns)
            while len(self._histories) > _MAX_CONVERSATIONS:
                self._histories.popitem(last=False)
        self._histories.move_to_end(conversation)
        return hist

    def forget(self, conversation: str) -> None:
        self._histories.pop(conversation, None)
        self._names.pop(conversation, None)

    def user_name(self, conversation: str) -> str | None:
        return self._names.get(conversation)

    def _remember(self, text: str, conversation: str) -> None:
        match = _TELLS_NAME.search(text)
        if match and match.group(1).lower() not in _NOT_NAMES:
            self._names[conversation] = match.group(1)[:1].upper() + match.group(1)[1:]
            while len(self._names) > _MAX_CONVERSATIONS:
                self._names.pop(next(iter(self._names)))

    def messages(self, text: str, conversation: str) -> list[dict[str, str]]:
        prompt = self.system_prompt
        name = self._names.get(conversation)
        if name:
            prompt += f" The user's name is {name}."
        return [
            {"role": "system", "content": prompt},
            *self.history(conversation),
            {"role": "user", "content": text},
        ]

    async def reply(
        self, text: str, conversation: str = "default", turn: LlmTurn | None = None
    ) -> AsyncIterator[str]:
        """Stream the answer to ``text``; the history is updated when it completes (or is cut)."""
        turn = turn if turn is not None else LlmTurn()
        self._remember(text, conversation)
        name = self._names.get(conversation)
        parts: list[str] = []
        if name and _ASKS_NAME.search(text):
            # asked back what it was told: answered from memory, not left to a small model's recall
            parts.append(f"Your name is {name}.")
            turn.text, turn.finish_reason = parts[0], "memory"
            yield parts[0]
        else:
            async for piece in self.generate(self.messages(text, conversation), turn=turn):
                parts.append(piece)
                yield piece
        answer = "".join(parts).strip()
        turn.intent = parse_tool_call(answer, self.catalog)
        hist = self.history(conversation)
        hist.append({"role": "user", "content": text})
        hist.append({"role": "assistant", "content": answer or "(no answer)"})

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        turn: LlmTurn | None = None,
    ) -> AsyncIterator[str]:
        """Stream tokens for raw chat ``messages`` (the OpenAI endpoint uses this directly)."""
        from models.scheduling import Priority

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=4096)
        cancel = threading.Event()

        def on_token(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        feed = {
            "messages": messages,
            "max_tokens": int(max_tokens or self.max_tokens),
            "temperature": float(self.temperature if temperature is None else temperature),
            "on_token": on_token,
            "cancel": cancel,
        }

        async def run() -> dict[str, Any]:
            try:
                return await self.manager.infer(self.model, feed, Priority.INTERACTIVE)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        task = asyncio.create_task(run(), name="llm-generate")
        try:
            while True:
                piece = await queue.get()
                if piece is None:
                    break
                yield piece
            result = await task
            if turn is not None:
                turn.text = result["text"]
                turn.tokens = result["tokens"]
                turn.finish_reason = result["finish_reason"]
                turn.first_token_s = result["first_token_s"]
        finally:
            if not task.done():
                cancel.set()  # the engine stops at its next token
                try:
                    await asyncio.shield(task)
                except Exception:
                    pass
