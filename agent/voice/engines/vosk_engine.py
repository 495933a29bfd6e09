"""Vosk (Kaldi) as a runtime: a streaming recognizer per utterance, partials and finals.

A vosk ``Model`` is shared and thread-safe; each utterance gets its own
``KaldiRecognizer`` (``{"op": "open"}``), is fed chunk by chunk (partials
come back), and is finished for the final text. A phrase list becomes a
grammar; words the model does not know are reported instead of being
silently dropped (Kaldi only logs a warning).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

from agent.errors import BadRequestError, EdgeAgentError
from agent.voice.engines import EngineRuntime, EngineSession
from runtimes.base import LoadOptions, warmed


class VoskStream:
    """One utterance's recognizer, the text finalised so far and its words with times."""

    def __init__(self, recognizer: Any) -> None:
        self.recognizer = recognizer
        self.finals: list[str] = []
        self.words: list[dict[str, Any]] = []

    def take(self, result: str) -> str:
        """Keep a final result's text and words (seconds from the stream's start); return the text."""
        data = json.loads(result)
        text = str(data.get("text", ""))
        if text:
            self.finals.append(text)
        for w in data.get("result") or ():
            self.words.append(
                {
                    "word": str(w.get("word", "")),
                    "start": round(float(w.get("start", 0.0)), 3),
                    "end": round(float(w.get("end", 0.0)), 3),
                    "probability": round(float(w.get("conf", 0.0)), 3),
                }
            )
        return text


class VoskSession(EngineSession):
    feed_keys: ClassVar[dict[str, tuple[tuple[type, ...], bool]]] = {
        "op": ((str,), True),  # open | feed | finish
        "stream": ((VoskStream,), False),
        "audio": ((bytes, bytearray, memoryview), False),
        "phrases": ((list, tuple), False),
    }

    def missing_words(self, phrases: list[str] | tuple[str, ...]) -> list[str]:
        words = {w for p in phrases for w in p.lower().split()}
        return sorted(w for w in words if self._engine.vosk_model_find_word(w) < 0)

    def run(self, feed: Any, *, validate: bool = False) -> dict[str, Any]:
        if validate:
            self.check_feed(feed)
        model = self.live_engine()
        import vosk

        op = feed["op"]
        try:
            if op == "open":
                phrases = list(feed.get("phrases") or ())
                missing = self.missing_words(phrases) if phrases else []
                known = [p for p in phrases if not any(w in missing for w in p.lower().split())]
                if known:
                    rec = vosk.KaldiRecognizer(model, 16000, json.dumps([*known, "[unk]"]))
                else:
                    rec = vosk.KaldiRecognizer(model, 16000)
                rec.SetWords(True)  # each final result carries its words with start/end/conf
                return {"stream": VoskStream(rec), "missing_words": missing}
            stream = feed.get("stream")
            if not isinstance(stream, VoskStream):
                raise BadRequestError("vosk: op feed/finish needs the stream from op open")
            if op == "feed":
                if stream.recognizer.AcceptWaveform(bytes(feed.get("audio") or b"")):
                    text = stream.take(stream.recognizer.Result())
                    return {"partial": " ".join(stream.finals), "final_segment": text}
                partial = json.loads(stream.recognizer.PartialResult()).get("partial", "")
                return {"partial": " ".join([*stream.finals, partial]).strip()}
            if op == "finish":
                stream.take(stream.recognizer.FinalResult())
                return {"text": " ".join(stream.finals).strip(), "words": list(stream.words)}
        except EdgeAgentError:
            raise
        except Exception as exc:
            raise EdgeAgentError(f"vosk failed: {exc}", code="inference_failed") from None
        raise BadRequestError(f"vosk: unknown op {op!r}; use open, feed or finish")

    def warm_up(self) -> float:
        t0 = time.perf_counter()
        stream = self.run({"op": "open"})["stream"]
        self.run({"op": "feed", "stream": stream, "audio": bytes(6400)})
        self.run({"op": "finish", "stream": stream})
        self.warmup_ms = (time.perf_counter() - t0) * 1000
        return self.warmup_ms

    def close(self) -> None:
        self._engine = None


class VoskRuntime(EngineRuntime):
    name: ClassVar[str] = "vosk"
    extra: ClassVar[str] = "voice"
    suffixes: ClassVar[tuple[str, ...]] = ()
    modules: ClassVar[tuple[str, ...]] = ("vosk",)

    def _import_engine(self) -> Any:
        import vosk

        vosk.SetLogLevel(-1)
        return vosk

    def load(self, model: Path, device: str, options: LoadOptions) -> VoskSession:
        model_file, vosk = self.prepare_load(model, device)
        path = model_file.parent  # a vosk model is a folder
        try:
            engine = vosk.Model(str(path))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise BadRequestError(
                f"vosk cannot load the model in {path} ({exc}); reinstall it", code="model_invalid"
            ) from None
        return warmed(VoskSession(self.name, engine, path), options)
