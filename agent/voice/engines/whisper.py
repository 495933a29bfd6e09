"""faster-whisper (CTranslate2) as a runtime: a waveform in, text out.

The model is a directory (``model.bin``, ``config.json``, tokenizer and
vocabulary); the manifest's first file is ``model.bin`` and its directory is
what CTranslate2 loads. ``local_files_only``: never reach for the hub.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from agent.errors import BadRequestError, EdgeAgentError
from agent.voice.engines import EngineRuntime, EngineSession
from runtimes.base import LoadOptions, warmed


class WhisperSession(EngineSession):
    feed_keys: ClassVar[dict[str, tuple[tuple[type, ...], bool]]] = {
        "audio": ((), True),  # float32 ndarray, 16 kHz mono
        "language": ((str,), False),
        "hotwords": ((str,), False),
        "initial_prompt": ((str,), False),
        "beam_size": ((int,), False),
        "word_timestamps": ((bool,), False),
    }

    def run(self, feed: Any, *, validate: bool = False) -> dict[str, Any]:
        if validate:
            self.check_feed(feed)
        model = self.live_engine()
        import numpy as np

        audio = np.asarray(feed["audio"], dtype=np.float32).reshape(-1)
        kwargs: dict[str, Any] = {
            "language": feed.get("language") or None,
            "beam_size": int(feed.get("beam_size") or 1),
            "without_timestamps": True,
            "condition_on_previous_text": False,
            "vad_filter": False,
        }
        if feed.get("hotwords"):
            kwargs["hotwords"] = feed["hotwords"]
        if feed.get("initial_prompt"):
            kwargs["initial_prompt"] = feed["initial_prompt"]
        want_words = bool(feed.get("word_timestamps"))
        if want_words:  # word times need the timestamp tokens
            kwargs.update(word_timestamps=True, without_timestamps=False)
        t0 = time.perf_counter()
        words: list[dict[str, Any]] = []
        try:
            with self._lock:  # one decode at a time per model: CTranslate2 threads are already busy
                segments, info = model.transcribe(audio, **kwargs)
                texts = []
                for seg in segments:
                    texts.append(seg.text)
                    for w in (seg.words or []) if want_words else []:
                        words.append(
                            {
                                "word": w.word.strip(),
                                "start": round(float(w.start), 3),
                                "end": round(float(w.end), 3),
                                "probability": round(float(w.probability), 3),
                            }
                        )
        except Exception as exc:
            raise EdgeAgentError(f"faster-whisper failed: {exc}", code="inference_failed") from None
        return {
            "words": words,
            "text": "".join(texts).strip(),
            "language": info.language,
            "duration": float(audio.size) / 16000.0,
            "seconds": time.perf_counter() - t0,
        }

    def zero_feed(self) -> dict[str, Any]:
        """The warm-up request: one second of faint noise."""
        import numpy as np

        rng = np.random.default_rng(0)
        return {"audio": (rng.standard_normal(16000) * 0.01).astype(np.float32), "language": "en"}

    def close(self) -> None:
        with self._lock:
            self._engine = None


def _thread_lock_for_tqdm() -> None:
    """faster-whisper's ``transcribe`` makes a (disabled) tqdm bar, whose first use creates a
    multiprocessing lock: a POSIX semaphore and a resource-tracker process beside the daemon,
    which then outlives every stop as a stray child and reports the semaphore as leaked. The
    daemon's threads only need a thread lock; set it before tqdm makes its own."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - faster-whisper depends on tqdm
        return
    if "_lock" not in vars(tqdm):
        tqdm.set_lock(threading.RLock())


class WhisperRuntime(EngineRuntime):
    name: ClassVar[str] = "ctranslate2"
    extra: ClassVar[str] = "voice"
    suffixes: ClassVar[tuple[str, ...]] = (".bin",)
    modules: ClassVar[tuple[str, ...]] = ("faster_whisper",)

    def _import_engine(self) -> Any:
        import faster_whisper

        _thread_lock_for_tqdm()
        return faster_whisper

    def load(self, model: Path, device: str, options: LoadOptions) -> WhisperSession:
        path, fw = self.prepare_load(model, device)
        try:
            engine = fw.WhisperModel(
                str(path.parent),
                device="cpu",
                compute_type="int8",
                cpu_threads=options.threads,
                num_workers=1,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise BadRequestError(
                f"faster-whisper cannot load {path.parent} ({exc}); the model may be truncated: reinstall it",
                code="model_invalid",
            ) from None
        return warmed(WhisperSession(self.name, engine, path.parent), options)
