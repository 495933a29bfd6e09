"""The reply's first audio, prepared in the trailing silence: at the end-of-speech decision it is ready.

Once the speaker pauses, the pipeline decodes the utterance early
(``SPECULATE_AFTER_MS``, asr.py). When that early text is a command the
intent rules answer, the first chunk of the answer (as ``speak`` will cut
it) is synthesised at once, while the end-of-speech decision is still
waiting for its silence. The turn itself runs as always at the decision —
the transcript, the dialogue, the intent event, the metrics: nothing is done
or announced early — except that when ``speak`` asks for that same chunk,
the audio is already there (or on its way).

Only the rules are used: they are a pure function of the text. An LLM or
a skill answer costs a model call or may act, so it is not prepared. Speech
going on drops the preparation, as it drops the early decode; so does a new
utterance, a timeout or the pipeline closing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agent.voice.tts import SentenceSplitter, SpeechAudio, Tts

if TYPE_CHECKING:
    from agent.voice.asr import AsrStream
    from agent.voice.pipeline import VoiceEngines


def first_chunk(answer: str) -> str:
    """The first piece ``speak`` synthesises of an answer that arrives whole (a rules answer)."""
    splitter = SentenceSplitter()
    chunks = splitter.feed(answer) + splitter.flush()
    return chunks[0] if chunks else ""


class Foresight:
    """One pipeline's preparation: ``begin`` when the early decode starts, ``take`` at the decision."""

    def __init__(self, engines: VoiceEngines, speed: float | None) -> None:
        self.engines = engines
        self.speed = speed
        self._prepared: PreparedSpeech | None = None

    def begin(self, stream: AsrStream) -> None:
        """The early decode has started (or been replaced): prepare from its text when it is done."""
        self.drop()
        early = stream.early_decode()
        if early is not None:
            self._prepared = PreparedSpeech(self.engines, early, self.speed)

    def drop(self) -> None:
        """Speech went on (or the utterance ended without a reply): nothing prepared is wanted."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.close()

    def take(self) -> PreparedSpeech | None:
        """At the decision: the preparation (its decode may still run), for the reply, which closes it."""
        prepared, self._prepared = self._prepared, None
        return prepared


class PreparedSpeech(Tts):
    """The turn's TTS: the prepared chunk if that is what is asked for, the voice itself otherwise."""

    def __init__(self, engines: VoiceEngines, early: asyncio.Future[str], speed: float | None) -> None:
        self.engines = engines
        self.tts = tts = engines.tts
        self.name, self.voice, self.rate = tts.name, tts.voice, tts.rate
        self.speed = speed
        self.sentence = ""
        self._task: asyncio.Task[SpeechAudio] | None = None
        self._closed = False
        # a done-callback runs before the end-of-speech decision's ``finish`` resumes with the same text
        early.add_done_callback(self._decoded)

    def _decoded(self, early: asyncio.Future[str]) -> None:
        if self._closed or early.cancelled() or early.exception() is not None:
            return
        try:
            answer = self.engines.dialogue.rules_answer(self.engines.postprocess(early.result()))
        except Exception:  # the turn meets (and reports) the same error itself
            return
        self.sentence = first_chunk(answer) if answer else ""
        if self.sentence:
            self._task = asyncio.create_task(
                self.tts.synthesize_sentence(self.sentence, speed=self.speed), name="voice-foresight-tts"
            )
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())  # unused: its error

    async def synthesize_sentence(self, sentence: str, *, speed: float | None = None) -> SpeechAudio:
        task = self._task
        if task is not None and sentence == self.sentence and speed == self.speed:
            self._task = None
            try:
                return await task
            except Exception:  # synthesised again below: an error there is the turn's
                pass
        return await self.tts.synthesize_sentence(sentence, speed=speed)

    def close(self) -> None:
        """The reply is over (or was never made): an unused preparation is cancelled."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
