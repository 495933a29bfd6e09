"""The settings tree: every section of the daemon's configuration, as frozen dataclasses.

Each field carries its documentation and bounds in ``setting(...)`` metadata,
so validation, ``config show`` and the README's reference all come from this
one place. Loading, environment overrides and validation live in
``agent.config``; this module only says what can be configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


def setting(
    default: Any,
    doc: str,
    *,
    secret: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A documented setting; ``secret`` values are masked in ``config show``."""
    return field(
        default=default,
        metadata={"doc": doc, "secret": secret, "min": minimum, "max": maximum},
    )


@dataclass(frozen=True)
class ApiSettings:
    host: str = setting(
        "127.0.0.1",
        "Address the local API binds to; keep it on loopback unless tokens and TLS are configured.",
    )
    port: int = setting(8470, "TCP port of the local API.", minimum=1, maximum=65535)
    max_body_bytes: int = setting(
        1_048_576, "Largest request body accepted; bigger ones get 413.", minimum=1024, maximum=1 << 30
    )
    lazy: bool = setting(
        True,
        "Bind the port at start but load the web stack on the first connection "
        "(saves ~15 MB of RSS on a box whose API is rarely used).",
    )
    enabled: bool = setting(True, "Serve the local API at all.")
    max_connections: int = setting(
        256,
        "Open connections the API holds at once; past it the oldest idle one is closed to make room "
        "(keep it well under the process's file-descriptor limit).",
        minimum=8,
        maximum=65_536,
    )
    header_timeout_s: float = setting(
        10.0, "Seconds a new connection has to send its request headers.", minimum=0.1, maximum=600
    )
    max_websockets: int = setting(32, "Open WebSocket sessions in all.", minimum=1, maximum=10_000)
    max_websockets_per_client: int = setting(
        4, "Open WebSocket sessions per token (or per source without one).", minimum=1, maximum=10_000
    )


@dataclass(frozen=True)
class MqttSettings:
    url: str = setting("", "Hub broker, mqtt://host:port or mqtts://host:port; empty means offline.")
    username: str = setting("", "MQTT user name.")
    password: str = setting("", "MQTT password.", secret=True)
    ca_file: str = setting("", "CA bundle for mqtts:// (empty: the system's).")
    cert_file: str = setting("", "Client certificate for mutual TLS.")
    key_file: str = setting("", "Client key for mutual TLS.")
    keepalive: int = setting(30, "MQTT keepalive in seconds.", minimum=5, maximum=3600)

    @property
    def enabled(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = setting("info", "Log level.")
    format: Literal["auto", "json", "text"] = setting(
        "auto", "auto: readable lines on a terminal, JSON lines otherwise (journald)."
    )


@dataclass(frozen=True)
class StoreSettings:
    synchronous: Literal["full", "normal"] = setting(
        "full",
        "SQLite synchronous mode. full: an acknowledged write survives power loss; "
        "normal: faster, may lose the last commits on power loss (never corrupts).",
    )
    check_on_open: Literal["quick", "off"] = setting(
        "quick", "Run PRAGMA quick_check when the database is opened."
    )
    reserve_free_mb: float = setting(
        16.0,
        "Free space (MiB) kept on the data directory's disk: below it the disk is 'low', the outbox "
        "stops growing, telemetry is folded harder and then dropped (counted); alerts are still stored.",
        minimum=0,
        maximum=1 << 20,
    )
    reserve_free_percent: float = setting(
        0.0,
        "The reserve as a share of the disk's size, in %; the larger of this and reserve_free_mb applies.",
        minimum=0,
        maximum=50,
    )
    min_free_mb: float = setting(
        2.0,
        "Hard floor (MiB, at most the reserve): below it the disk is 'full', nothing new is stored, "
        "ingestion answers 507 with Retry-After and new alerts wait in memory until space is back.",
        minimum=0,
        maximum=1 << 20,
    )


@dataclass(frozen=True)
class SupervisorSettings:
    shutdown_timeout: float = setting(
        4.0, "Seconds services get to stop on SIGTERM before they are abandoned.", minimum=0.1, maximum=60
    )
    restart_backoff_initial: float = setting(
        0.5, "First restart delay of a failed service (s).", minimum=0.01, maximum=60
    )
    restart_backoff_max: float = setting(30.0, "Longest restart delay (s).", minimum=0.1, maximum=3600)


@dataclass(frozen=True)
class BusSettings:
    queue_size: int = setting(1000, "Default bound of each subscriber's queue.", minimum=1, maximum=1_000_000)


@dataclass(frozen=True)
class SyncSettings:
    """The device side of sync: outbox bounds, MQTT session, telemetry, commands (sync/)."""

    outbox_max_bytes: int = setting(
        64 * 1024 * 1024,
        "Bound of the outbox (payload + topic bytes) while the hub is unreachable.",
        minimum=65536,
        maximum=1 << 40,
    )
    outbox_policy: Literal["drop_oldest", "reject_new"] = setting(
        "drop_oldest",
        "When the outbox is full: drop the oldest of the least important messages (never a more "
        "important one for a less important one), or refuse the new message.",
    )
    alert_ttl_s: float = setting(0.0, "Alerts older than this are dropped unsent (0: never).", minimum=0)
    event_ttl_s: float = setting(
        7 * 86400.0, "Events older than this are dropped unsent (0: never).", minimum=0
    )
    telemetry_ttl_s: float = setting(
        86400.0, "Telemetry older than this is dropped unsent (0: never).", minimum=0
    )
    inflight: int = setting(
        32,
        "QoS 1 messages sent and awaiting PUBACK at once (the in-flight window).",
        minimum=1,
        maximum=65535,
    )
    receipts: bool = setting(
        True,
        "Keep each outbox message until the hub's receipt says it is stored (false: until the broker's "
        "PUBACK, for a broker without edge-hub).",
    )
    receipt_timeout_s: float = setting(
        30.0,
        "Send a message again when no hub receipt names it within this time (doubles while none come).",
        minimum=0.5,
        maximum=3600,
    )
    receipt_window: int = setting(
        2000, "Messages sent and awaiting a hub receipt at most.", minimum=1, maximum=1_000_000
    )
    protocol: Literal["auto", "5", "3.1.1"] = setting(
        "auto", "MQTT protocol; auto tries 5 and falls back to 3.1.1 when the broker refuses it."
    )
    session_expiry_s: int = setting(
        7 * 86400,
        "How long the broker keeps our session (subscriptions, queued commands) while we are away.",
        minimum=0,
        maximum=4294967295,
    )
    reconnect_initial_s: float = setting(0.5, "First reconnect delay (s).", minimum=0.01, maximum=600)
    reconnect_max_s: float = setting(60.0, "Longest reconnect delay (s).", minimum=0.1, maximum=3600)
    telemetry_interval_s: float = setting(
        30.0, "Seconds between telemetry samples (0: no telemetry).", minimum=0, maximum=86400
    )
    offline_window: int = setting(
        10,
        "While offline, this many telemetry samples are folded into one min/mean/max message, so a "
        "long outage does not fill the outbox with telemetry.",
        minimum=1,
        maximum=100000,
    )
    trusted_keys: tuple[str, ...] = setting(
        (), "Hub public keys (Ed25519, hex) whose signed commands and bundles are accepted."
    )
    trusted_keys_file: str = setting(
        "", "File of hub public keys, one per line (default: <data_dir>/hub_keys.txt when it exists)."
    )
    labels: tuple[str, ...] = setting(
        (), "key=value labels this device reports to the hub (deployments select devices by label)."
    )
    discovery: bool = setting(
        True, "With no mqtt.url, look for a hub on the LAN (zeroconf _edge-hub._tcp; extra 'discovery')."
    )
    discovery_timeout_s: float = setting(3.0, "How long one LAN search lasts (s).", minimum=0.1, maximum=60)
    command_workers: int = setting(2, "Commands executed at once.", minimum=1, maximum=64)
    log_ring_size: int = setting(
        1000, "Recent log records kept in memory for the 'logs.tail' command.", minimum=0, maximum=100000
    )
    ha_discovery: bool = setting(
        False,
        "Announce this box to Home Assistant by MQTT discovery on the broker it connects to: machines' "
        "anomaly and alert level, channel values, open alerts, voice state.",
    )
    ha_prefix: str = setting("homeassistant", "Home Assistant's MQTT discovery prefix.")
    ha_state_interval_s: float = setting(
        5.0, "At most one channel-values update per machine this often (s).", minimum=0.1, maximum=3600
    )


@dataclass(frozen=True)
class SecuritySettings:
    api_auth: Literal["auto", "required", "off"] = setting(
        "auto",
        "Local API bearer tokens. auto: required once any token exists, and always when api.host is "
        "not loopback; required: always; off: never (refused when api.host is not loopback). "
        "/healthz and /readyz are always open.",
    )
    api_tls_cert: str = setting("", "PEM certificate (chain) for HTTPS on the local API; empty: plain HTTP.")
    api_tls_key: str = setting("", "PEM private key for api_tls_cert.")
    rate_limit_per_s: float = setting(
        20.0,
        "Local API requests per second allowed per token (or per peer without one).",
        minimum=0.1,
        maximum=100_000,
    )
    rate_limit_burst: int = setting(
        40, "Requests a client may send at once before rate limiting.", minimum=1, maximum=100_000
    )
    refusal_window_s: float = setting(
        60.0,
        "Refused API calls are counted per window and written as one audit summary per window.",
        minimum=0.05,
        maximum=3600,
    )
    refusal_log_bytes: int = setting(
        1_048_576,
        "Size budget of the refusal audit segment (<data_dir>/audit-refusals.db); the oldest "
        "summaries rotate out behind a hash-chain checkpoint.",
        minimum=32_768,
        maximum=1 << 30,
    )
    seal_key_file: str = setting(
        "", "Key file that seals secrets at rest (default: <data_dir>/keys/seal.key)."
    )
    update_root_file: str = setting(
        "/etc/edge-agent/update-root.json",
        "Signed root metadata that anchors update trust, installed with the box (read-only to the agent).",
    )
    vendor_keys: tuple[str, ...] = setting((), "Vendor public keys (hex) that sign licence files.")
    licence_file: str = setting("", "Licence file (default: <data_dir>/licence.json).")
    licensed_features: tuple[str, ...] = setting(
        (), "Features that need a valid licence naming them; others are always allowed."
    )
    fleet: str = setting(
        "", "Fleet this device belongs to; a licence may name the fleet instead of the device."
    )


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
        metadata={
            "doc": "Machines, their channels and per-stream detector settings "
            "([sensors.machines.NAME], see agent/sensors/spec.py); default: one simulated press."
        },
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
        metadata={
            "doc": "Settings of each plugin ([plugins.config.NAME]); `edge-agent config reference` "
            "lists every installed plugin's keys."
        },
    )


@dataclass(frozen=True)
class Settings:
    device_id: str = setting("", "This box's id on the hub (default: derived from /etc/machine-id).")
    data_dir: str = setting(
        "",
        "Where the database, models and keys live (default: "
        "$STATE_DIRECTORY or /var/lib/edge-agent under systemd, else "
        "$XDG_DATA_HOME/edge-agent).",
    )
    api: ApiSettings = field(default_factory=ApiSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    log: LogSettings = field(default_factory=LogSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    bus: BusSettings = field(default_factory=BusSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    sensors: SensorSettings = field(default_factory=SensorSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    plugins: PluginSettings = field(default_factory=PluginSettings)

    #: where these settings came from (a path, or "<embedded default>")
    source: str = field(default="<embedded default>", compare=False, metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def database_path(self) -> Path:
        return self.data_path / "edge-agent.db"
