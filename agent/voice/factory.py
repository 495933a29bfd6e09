"""Build the voice engines and the model manager from ``VoiceSettings`` (once, at the entry point).

``voice_manager`` makes a model manager whose store has the packaged voice
models laid over the box's model store and whose runtimes include the voice
engines; the daemon's shared manager should be built the same way (see
``manager_parts``) so that voice and everything else share one budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.voice.catalog import VoiceModelStore, wake_model_name

if TYPE_CHECKING:
    from agent.config import VoiceSettings
    from agent.voice.pipeline import PipelineConfig, VoiceEngines
    from models.manager import ModelManager


def manager_parts(models_root: Path | str | None) -> tuple[VoiceModelStore, dict[str, Any]]:
    """(store, runtimes) for a ModelManager that can load the voice models."""
    from agent.voice.engines import all_runtimes
    from models.store import ModelStore

    base = ModelStore(Path(models_root)) if models_root else None
    return VoiceModelStore(base), all_runtimes()


def voice_manager(
    models_root: Path | str | None,
    *,
    threads: int = 2,
    pool_sizes: dict[str, int] | None = None,
    **settings: Any,
) -> ModelManager:
    from models.manager import ManagerSettings, ModelManager

    store, runtimes = manager_parts(models_root)
    ms = ManagerSettings(threads=threads, pool_sizes=dict(pool_sizes or {}), **settings)
    return ModelManager(store, ms, runtimes=runtimes)


def wake_pool_sizes(wake_words: tuple[str, ...] | list[str], streams: int) -> dict[str, int]:
    """A streaming wake model holds state per stream: one session per stream that listens."""
    return {wake_model_name(w): streams for w in wake_words}


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ModelNames:
    vad: str
    wake: tuple[str, ...]
    asr: str
    tts: str  # "" for espeak
    llm: str  # "" when the LLM is off

    def required(self) -> list[str]:
        return [self.vad, *self.wake, self.asr, *([self.tts] if self.tts else [])]


def model_names(settings: VoiceSettings) -> ModelNames:
    asr = settings.asr_model or ("vosk-ko" if settings.asr_engine == "vosk" else "whisper-tiny-en")
    tts = "" if settings.tts_voice.startswith("espeak:") else settings.tts_voice
    return ModelNames(
        vad="silero-vad",
        wake=tuple(wake_model_name(w) for w in settings.wake_words),
        asr=asr,
        tts=tts,
        llm=settings.llm_model if settings.llm else "",
    )


def pipeline_config(settings: VoiceSettings, **overrides: Any) -> PipelineConfig:
    from dataclasses import replace

    from agent.voice.pipeline import PipelineConfig

    cfg = PipelineConfig(
        wake_words=tuple(settings.wake_words),
        wake_threshold=settings.wake_threshold,
        vad_threshold=settings.vad_threshold,
        end_of_speech_ms=settings.end_of_speech_ms,
        max_utterance_s=settings.max_utterance_s,
        listen_timeout_s=settings.listen_timeout_s,
        phrases=tuple(settings.phrases),
        tts_speed=settings.tts_rate,
        level_interval_ms=settings.level_interval_ms,
        noise_suppression=settings.noise_suppression,
        auto_gain_dbfs=settings.auto_gain_dbfs,
    )
    return replace(cfg, **overrides) if overrides else cfg


def build_engines(
    manager: ModelManager, settings: VoiceSettings, *, llm_available: bool = True
) -> VoiceEngines:
    """The shared engines; nothing is loaded here (``VoiceService`` loads and pins)."""
    from agent.voice.asr import make_asr
    from agent.voice.dialogue import Dialogue
    from agent.voice.intents import IntentCatalog
    from agent.voice.llm import LlmChat
    from agent.voice.pipeline import VoiceEngines
    from agent.voice.postprocess import PostProcessor, Vocabulary
    from agent.voice.tts import make_tts

    names = model_names(settings)
    catalog = IntentCatalog.load(settings.intents_file or None)
    llm = None
    if names.llm and llm_available:
        llm = LlmChat(
            manager,
            names.llm,
            system_prompt=settings.system_prompt,
            max_tokens=settings.llm_max_tokens,
            catalog=catalog,
        )
    vocabulary = Vocabulary.load(settings.vocabulary_file) if settings.vocabulary_file else Vocabulary()
    return VoiceEngines(
        manager=manager,
        asr=make_asr(manager, settings.asr_engine, names.asr, settings.language),
        tts=make_tts(manager, settings.tts_voice, settings.tts_rate, settings.tts_pitch),
        dialogue=Dialogue(catalog, llm),
        postprocess=PostProcessor(vocabulary),
        vad_model=names.vad,
    )
