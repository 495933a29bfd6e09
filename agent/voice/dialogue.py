"""One dialogue turn: the rules first, then the LLM, streamed as text pieces.

A command the intent rules know is answered at once from the intent's
template (no model); anything else goes to the LLM, whose tokens stream out
as they come. A tool call from the LLM is held back (never spoken as JSON)
and turned into the same intent. With no LLM, the turn ends in a polite "I
can't help with that" rather than silence.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from agent.voice.intents import IntentCatalog, IntentMatch
from agent.voice.llm import LlmChat, LlmTurn, looks_like_tool_call

FALLBACK = "Sorry, I can't help with that."
NO_LLM = "Sorry, I can only operate the car's functions."


@dataclass
class TurnResult:
    text: str = ""
    source: str = "none"  # intent | skill | llm | none
    intent: IntentMatch | None = None
    first_piece_at: float | None = None  # perf_counter of the first text piece
    stop: bool = False  # the user said "stop" / "cancel"


class Dialogue:
    def __init__(self, catalog: IntentCatalog, llm: LlmChat | None = None) -> None:
        self.catalog = catalog
        self.llm = llm
        #: voice-skill plugins (agent/plugins), asked before the LLM; set by the plugins service
        self.skills: Callable[[str], Awaitable[str | None]] | None = None

    def rules_answer(self, text: str) -> str:
        """What ``respond`` will say for ``text`` if the intent rules answer it, else "".

        Matching is a pure function of the text (no model, nothing done), so
        the answer can be known, and its speech prepared, before the turn.
        """
        match = self.catalog.match(text)
        if match is None or match.name == "system.stop":
            return ""
        return match.answer

    async def respond(self, text: str, conversation: str, result: TurnResult) -> AsyncIterator[str]:
        """Text pieces of the answer; ``result`` is filled in as the turn goes."""
        match = self.catalog.match(text)
        if match is not None:
            result.intent, result.source = match, "intent"
            if match.name == "system.stop":
                result.stop = True
                return
            result.first_piece_at = time.perf_counter()
            result.text = match.answer
            if match.answer:
                yield match.answer
            return
        if self.skills is not None:
            reply = await self.skills(text)
            if reply:
                result.first_piece_at, result.source, result.text = time.perf_counter(), "skill", reply
                yield reply
                return
        if self.llm is None:
            result.first_piece_at = time.perf_counter()
            result.text = NO_LLM
            yield NO_LLM
            return
        turn = LlmTurn()
        result.source = "llm"
        held: list[str] = []
        holding: bool | None = None  # undecided until the first visible characters
        async for piece in self.llm.reply(text, conversation, turn):
            if result.first_piece_at is None:
                result.first_piece_at = time.perf_counter()
            if holding is None:
                held.append(piece)
                prefix = "".join(held)
                if not prefix.strip():
                    continue
                holding = looks_like_tool_call(prefix)
                if not holding:
                    result.text += prefix
                    yield prefix
                continue
            if holding:
                held.append(piece)
            else:
                result.text += piece
                yield piece
        if holding:
            if turn.intent is not None:
                result.intent = turn.intent
                result.text = turn.intent.answer
                if turn.intent.answer:
                    yield turn.intent.answer
            else:  # it looked like a call but was not one: say it was not understood
                result.text = FALLBACK
                yield FALLBACK
        elif not result.text.strip():
            result.text = FALLBACK
            yield FALLBACK
