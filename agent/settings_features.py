"""The settings of the daemon's features: sensors, voice, models and plugins (sections of ``Settings``).

Split from agent/settings.py, which declares the daemon's core sections and
the root, and re-exports these; the same rules apply (each field a
documented ``setting(...)``, loaded by agent/core/settings.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent.core.settings import setting, setting_metadata


def _sample_machines() -> dict[str, Any]:
    from agent.sensors.spec import sample_machines

    return sample_machines()


@dataclass(frozen=True)
class SensorSettings:
    """The sensor pipeline (agent/sensors): sources, machines and their detectors, alerts."""

    enabled: bool = setting(True, "Run the sensor pipeline: sources, anomaly detectors, alerts.")
    sources: tuple[str, ...] = setting(
        ("simulator",),
        "Sources to run: simulator, serial, mqtt. HTTP batches (POST /v1/sensors/readings) are "
        "accepted whenever the pipeline runs.",
    )
    machines: dict[str, Any] = field(
        default_factory=_sample_machines,
        metadata=setting_metadata(
            "Machines, their channels and per-stream detector settings "
            "([sensors.machines.NAME], see agent/sensors/spec.py); default: one simulated press."
        ),
    )
    queue_size: int = setting(
        10000,
        "Readings waiting for the detectors; when full the oldest are dropped (counted).",
        minimum=16,
        maximum=10_000_000,
    )
    overflow: Literal["drop_oldest", "drop_newest"] = setting(
        "drop_oldest",
        "What a full reading queue drops: the oldest reading (keeps the stream current) or the new one.",
    )
    batch_ms: float = setting(
        10.0,
        "Longest wait to gather a micro-batch before scoring (ms); bounds the ingest-to-alert delay.",
        minimum=0,
        maximum=1000,
    )
    reading_event_s: float = setting(
        1.0,
        "Seconds between sensor.reading events per machine on the bus (a sample, not every reading).",
        minimum=0.05,
        maximum=3600,
    )
    max_future_s: float = setting(
        5.0, "Readings stamped further ahead of this box's clock are rejected (s).", minimum=0, maximum=86400
    )
    serial_ports: tuple[str, ...] = setting(
        ("auto",), "Serial ports of sensor nodes: paths or globs; auto = USB serial adapters found."
    )
    serial_baud: int = setting(115200, "Serial speed of the sensor nodes.", minimum=300, maximum=12_000_000)
    mqtt_url: str = setting(
        "mqtt://127.0.0.1:1883", "Local broker other equipment publishes to (the mqtt source)."
    )
    mqtt_topics: tuple[str, ...] = setting(
        ("factory/#",),
        "Topics to read: JSON {machine, ts, values} payloads, or .../MACHINE/CHANNEL with a number.",
    )
    simulator_rate_hz: float = setting(
        10.0, "Rows per second per simulated machine.", minimum=0.1, maximum=10000
    )
    simulator_faults: bool = setting(
        True, "Inject a fault into the simulated machine now and then (demo: alerts raised and cleared)."
    )
    simulator_seed: int = setting(0, "Random seed of the simulator (0: a new one at each start).", minimum=0)


@dataclass(frozen=True)
class VoiceSettings:
    """The in-vehicle voice assistant (agent/voice): wake word, VAD, ASR, dialogue, TTS."""

    enabled: Literal["auto", "on", "off"] = setting(
        "auto",
        "auto: run the assistant when the voice models are installed (extra 'voice'); on: always "
        "(a model that fails to load is reported and the rest of the daemon keeps running); off: never.",
    )
    source: str = setting(
        "",
        "Audio input: empty (none; clients stream over the API or Wyoming), 'mic', 'mic:<name or index>', "
        "or a WAV/FLAC file.",
    )
    sink: str = setting(
        "", "Audio output: empty (none), 'speaker', 'speaker:<name or index>', or a WAV file to write."
    )
    wake_words: tuple[str, ...] = setting(
        ("okay_nabu",), "Wake words (microWakeWord models: okay_nabu, hey_jarvis, alexa, hey_mycroft)."
    )
    wake_threshold: float = setting(
        0.0, "Wake word probability cutoff; 0 uses each model's own tuned cutoff.", minimum=0, maximum=1
    )
    vad_threshold: float = setting(
        0.5, "Speech probability above which a frame is speech.", minimum=0.05, maximum=0.95
    )
    end_of_speech_ms: int = setting(
        500,
        "Silence after speech that ends an utterance (ms); shorter answers sooner, cuts slow talkers.",
        minimum=100,
        maximum=5000,
    )
    max_utterance_s: float = setting(
        15.0,
        "Longest utterance; speech beyond it is cut and transcribed (bounds memory and latency).",
        minimum=1,
        maximum=120,
    )
    listen_timeout_s: float = setting(
        5.0,
        "After the wake word, give up when no speech starts within this time (s).",
        minimum=0.5,
        maximum=60,
    )
    asr_engine: Literal["whisper", "vosk"] = setting(
        "whisper", "Speech recognizer: whisper (faster-whisper) or vosk."
    )
    asr_model: str = setting("", "ASR model name (default: whisper-tiny-en, or vosk-ko for vosk).")
    language: str = setting("en", "Language of the speech and the answers.")
    phrases: tuple[str, ...] = setting((), "Phrases the recognizer should favour (names, places, commands).")
    vocabulary_file: str = setting(
        "",
        "User vocabulary: lines 'heard => meant' applied to transcripts (e.g. 'air con => air conditioning').",
    )
    intents_file: str = setting(
        "", "Extra vehicle intents (TOML, same schema as the built-in file), merged over them."
    )
    llm: bool = setting(True, "Answer what no intent matches with the local LLM (extra 'llm').")
    llm_model: str = setting("smollm2-135m", "LLM model name.")
    llm_max_tokens: int = setting(96, "Longest LLM answer in tokens.", minimum=8, maximum=4096)
    system_prompt: str = setting("", "LLM system prompt (default: a short in-car assistant prompt).")
    tts_voice: str = setting(
        "piper-joe-medium", "TTS voice: a piper model name, or espeak:<voice> (e.g. espeak:en-us)."
    )
    tts_rate: float = setting(1.0, "Speaking rate (1 normal, 1.2 faster).", minimum=0.5, maximum=2.0)
    tts_pitch: int = setting(50, "Pitch for espeak-ng voices (0-99).", minimum=0, maximum=99)
    wyoming_uri: str = setting(
        "", "Serve the Wyoming protocol here, e.g. tcp://127.0.0.1:10700 (empty: off)."
    )
    level_interval_ms: int = setting(
        100,
        "Publish voice.level (RMS, peak, waveform) on /v1/events every this many ms (0: off).",
        minimum=0,
        maximum=10_000,
    )
    noise_suppression: int = setting(
        0, "WebRTC noise suppression before wake word and VAD: 0 off, 1-4 stronger.", minimum=0, maximum=4
    )
    auto_gain_dbfs: int = setting(
        0, "WebRTC automatic gain target in dBFS below full scale: 0 off, 1-31.", minimum=0, maximum=31
    )
    max_streams: int = setting(
        4,
        "Audio streams with wake word detection at once (each holds its own wake-word sessions).",
        minimum=1,
        maximum=64,
    )
    threads: int = setting(2, "Threads each voice engine may use.", minimum=1, maximum=64)


@dataclass(frozen=True)
class ModelsSettings:
    """The model manager (models/manager.py): memory budget, pools, pinning, device policy."""

    memory_budget_mb: int = setting(
        0, "Memory the loaded models may use (MiB); 0: memory_share of RAM.", minimum=0, maximum=1 << 24
    )
    memory_share: float = setting(
        0.5, "Share of total RAM for models when memory_budget_mb is 0.", minimum=0.05, maximum=0.95
    )
    idle_timeout_s: float = setting(300.0, "Unload an unpinned model unused this long (0: never).", minimum=0)
    pool_size: int = setting(1, "Sessions per model, for concurrent requests.", minimum=1, maximum=64)
    batch_max: int = setting(
        1,
        "Up to this many queued batch-priority calls to one model share a run (joined on the first "
        "axis); only for models whose rows are independent; 1: off.",
        minimum=1,
        maximum=256,
    )
    pinned: tuple[str, ...] = setting((), "Models loaded at start and never evicted (wake word, VAD).")
    workers: int = setting(4, "Inference worker threads.", minimum=1, maximum=256)
    threads: int = setting(
        0, "Engine threads per session; 0: from the hardware profile.", minimum=0, maximum=256
    )
    smoke_test_on_load: bool = setting(True, "Run each model's smoke-test vector when it loads.")
    device_order: tuple[str, ...] = setting(
        ("npu", "tpu", "gpu", "cpu"), "Device kinds to try, best first (fallback chain)."
    )
    forbid_devices: tuple[str, ...] = setting((), "Device kinds never to use.")
    precisions: tuple[str, ...] = setting((), "Preferred precisions, best first (empty: per device).")
    trusted_keys: tuple[str, ...] = setting((), "Public keys (hex) of trusted model publishers.")


@dataclass(frozen=True)
class PluginSettings:
    """Plugins (agent/plugins): sources, detectors, voice skills and sinks, each in its own process."""

    enabled: bool = setting(True, "Run the plugins enabled with `edge-agent plugins enable NAME`.")
    memory_mb: int = setting(
        256, "Address space each plugin process may use (MiB, RLIMIT_AS).", minimum=64, maximum=1 << 20
    )
    cpu_s: int = setting(
        0, "CPU seconds a plugin process may use before it is restarted (RLIMIT_CPU; 0: no limit).", minimum=0
    )
    heartbeat_s: float = setting(2.0, "Seconds between heartbeats to each plugin.", minimum=0.05, maximum=600)
    hang_timeout_s: float = setting(
        10.0,
        "A plugin that answers no heartbeat this long is killed and restarted (s).",
        minimum=0.1,
        maximum=3600,
    )
    max_failures: int = setting(
        5, "Failures within failure_window_s after which a plugin is disabled.", minimum=1, maximum=1000
    )
    failure_window_s: float = setting(300.0, "Window of max_failures (s).", minimum=1, maximum=86400)
    max_readings_per_s: float = setting(
        50_000.0, "Readings per second one plugin may send; past it the plugin is slowed.", minimum=1
    )
    max_events_per_s: float = setting(
        200.0, "Events per second one plugin may publish; past it they are dropped (counted).", minimum=1
    )
    systemd_scope: bool = setting(
        False,
        "Start each plugin in a transient systemd scope with MemoryMax and CPUQuota "
        "(needs a service user allowed to create scopes); rlimits apply either way.",
    )
    config: dict[str, Any] = field(
        default_factory=dict,
        metadata=setting_metadata(
            "Settings of each plugin ([plugins.config.NAME]); `edge-agent config reference` "
            "lists every installed plugin's keys."
        ),
    )
