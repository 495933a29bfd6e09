"""The stop word during a reply: a short utterance that says "stop" ends the reply.

While a reply plays, its own VAD listens; when the user starts speaking the
playback is ducked, and when they stop, an utterance short enough to be a
command (``STOP_MAX_MS``) is transcribed beside the input loop. "stop",
"cancel", "be quiet"... interrupt the reply; anything else was just talk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from agent.errors import EdgeAgentError
from agent.voice.postprocess import normalize
from agent.voice.vad import Segmenter, VoiceActivity, VoiceStarted, VoiceStopped

if TYPE_CHECKING:
    from agent.voice.asr import AsrEngine
    from agent.voice.sinks import AudioSink
    from models.manager import ModelManager

log = logging.getLogger("edge_agent.voice")

STOP_WORDS = frozenset({"stop", "cancel", "be quiet", "quiet", "shut up", "enough", "never mind", "stop it"})
#: a stop command is short: longer speech during a reply is not one
STOP_MAX_MS = 2500


def is_stop(text: str) -> bool:
    said = normalize(text)
    return said in STOP_WORDS or (said.startswith("stop") and len(said.split()) <= 2)


class StopWordWatcher:
    """One per pipeline: ``watch(pcm)`` during a reply; ``on_stop`` runs when "stop" was said."""

    def __init__(
        self,
        manager: ModelManager,
        asr: AsrEngine,
        *,
        stream: str,
        vad_model: str,
        vad_threshold: float,
        duck_db: float,
        on_stop: Callable[[], Awaitable[None]],
    ) -> None:
        self.vad = VoiceActivity(
            manager, Segmenter(vad_threshold, 300, max_utterance_ms=STOP_MAX_MS + 500), stream, vad_model
        )
        self.asr = asr
        self.stream = stream
        self.duck_db = duck_db
        self.on_stop = on_stop
        self._audio = bytearray()
        self._checks: set[asyncio.Task[None]] = set()

    def reset(self, audio_ms: float) -> None:
        """A reply ended: forget speech heard during it."""
        self._audio = bytearray()
        self.vad.reset(audio_ms)

    async def watch(self, pcm: bytes, preroll: Iterable[bytes], sink: AudioSink | None) -> None:
        """During a reply: duck while the user speaks; check a short utterance for a stop word."""
        vad = self.vad
        if vad.in_speech or self._audio:
            self._audio += pcm
        for event in await vad.process(pcm):
            if isinstance(event, VoiceStarted):
                self._audio = bytearray(b"".join(preroll))
                if sink is not None:
                    sink.duck(self.duck_db)
            elif isinstance(event, VoiceStopped):
                audio, self._audio = bytes(self._audio), bytearray()
                if sink is not None:
                    sink.unduck()
                if event.speech_ms <= STOP_MAX_MS:
                    task = asyncio.create_task(self._check(audio), name=f"voice-{self.stream}-stop")
                    self._checks.add(task)
                    task.add_done_callback(self._checks.discard)

    async def _check(self, audio: bytes) -> None:
        try:
            text = await self.asr.transcribe(audio)
        except EdgeAgentError as exc:
            log.warning("stop-word check failed: %s", exc)
            return
        if is_stop(text):
            await self.on_stop()

    async def close(self) -> None:
        for task in list(self._checks):
            task.cancel()
        for task in list(self._checks):
            with contextlib.suppress(BaseException):
                await task
