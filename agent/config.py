"""Settings: one TOML file, environment overrides, an embedded default.

Settings are a tree of frozen dataclasses built once at the entry point and
passed down; nothing deeper reads files or the environment for config. Every
field carries its documentation and constraints in ``field(metadata=...)`` so
validation, ``config show`` and the README reference come from one place.

Precedence: embedded defaults < TOML file < ``EDGE_AGENT_...`` variables.
A bad value stops the start with a ConfigError naming the file, the key and
what was expected (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
ENV_PREFIX = "EDGE_AGENT_"
MASK = "********"


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

    #: where these settings came from (a path, or "<embedded default>")
    source: str = field(default="<embedded default>", compare=False, metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def database_path(self) -> Path:
        return self.data_path / "edge-agent.db"


# ---------------------------------------------------------------- defaults


def default_data_dir(env: Mapping[str, str]) -> str:
    """systemd gives us STATE_DIRECTORY; otherwise follow the XDG spec."""
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    if env.get("INVOCATION_ID"):  # started by systemd without StateDirectory=
        return "/var/lib/edge-agent"
    xdg = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return str(Path(xdg) / "edge-agent")


def default_device_id(machine_id_path: Path = Path("/etc/machine-id")) -> str:
    """A stable id that does not reveal the machine id itself (systemd advises hashing it)."""
    try:
        machine_id = machine_id_path.read_text().strip()
    except OSError:
        machine_id = ""
    seed = machine_id or socket.gethostname()
    return "ea-" + hashlib.sha256(f"edge-agent:{seed}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build validated settings from the embedded default, a TOML file and the environment.

    ``path=None`` uses /etc/edge-agent/agent.toml when it exists, else only the
    embedded default. A path given explicitly must exist.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(ENV_PREFIX + "CONFIG"))
    file_path = Path(path or env.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG_PATH)
    data: dict[str, Any] = {}
    source = "<embedded default>"
    if file_path.exists():
        data = read_toml(file_path)
        source = str(file_path)
    elif explicit:
        raise ConfigError(
            f"config file {file_path} does not exist; create it or drop --config "
            "to run on the embedded default"
        )
    apply_env(data, env, source)
    settings = build_settings(Settings, data, source, prefix="")
    fill: dict[str, Any] = {"source": source}
    if not settings.data_dir:
        fill["data_dir"] = default_data_dir(env)
    if not settings.device_id:
        fill["device_id"] = default_device_id()
    return dataclasses.replace(settings, **fill)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def apply_env(data: dict[str, Any], env: Mapping[str, str], source: str, prefix: str = ENV_PREFIX) -> None:
    """EDGE_AGENT_KEY and EDGE_AGENT_SECTION__KEY override the file; values are typed later.

    ``prefix`` lets another program built on these settings helpers (edge-hub: EDGE_HUB_) use its own.
    """
    for name, raw in sorted(env.items()):
        # not settings: the config path, and the API token the CLI sends
        if not name.startswith(prefix) or name in (prefix + "CONFIG", prefix + "TOKEN"):
            continue
        parts = name[len(prefix) :].lower().split("__")
        target = data
        for part in parts[:-1]:
            sub = target.setdefault(part, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"environment variable {name}: [{part}] is not a section")
            target = sub
        target[parts[-1]] = _EnvValue(raw, name)


@dataclass(frozen=True)
class _EnvValue:
    """A raw string from the environment, converted to the field's type when validated."""

    raw: str
    variable: str


def build_settings(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    """Validate ``data`` into the frozen dataclass ``cls`` (recursively); ConfigError names the key.

    Public because the hub's settings and remote config changes (sync/overrides) validate with it.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        first = data[unknown[0]]
        if isinstance(first, _EnvValue):
            source = f"environment variable {first.variable}"
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]} in {where}; known keys: {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a table ([{key}]), got {_describe(value)}")
            values[name] = build_settings(hint, value, source, key + ".")
        else:
            values[name] = _convert(value, hint, f, key, source)
    return cls(**values)


def _convert(value: Any, hint: Any, f: dataclasses.Field, key: str, source: str) -> Any:
    origin = source
    if isinstance(value, _EnvValue):
        origin = f"environment variable {value.variable}"
        value = _parse_env(value.raw, hint)
    expected = _expected(hint, f)
    ok = True
    if get_origin(hint) is Literal:
        ok = value in get_args(hint)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is dict or get_origin(hint) is dict:  # a free-form table; its owner's validator checks it
        ok = isinstance(value, dict)
    elif get_origin(hint) in (list, tuple):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if ok:
        problem = _VALIDATORS.get(key, lambda v: None)(value)
        if problem:
            raise ConfigError(f"{origin}: {key}: {problem}, got {value!r}")
        return value
    raise ConfigError(f"{origin}: {key}: expected {expected}, got {_describe(value)}")


def _parse_env(raw: str, hint: Any) -> Any:
    if hint is bool:
        low = raw.strip().lower()
        return {
            "1": True,
            "true": True,
            "yes": True,
            "on": True,
            "0": False,
            "false": False,
            "no": False,
            "off": False,
        }.get(low, raw)
    if hint in (int, float):
        try:
            return int(raw) if hint is int else float(raw)
        except ValueError:
            return raw
    if get_origin(hint) in (list, tuple):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _expected(hint: Any, f: dataclasses.Field) -> str:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")

    def num(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    bounds = f" between {num(lo)} and {num(hi)}" if lo is not None and hi is not None else ""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint] + bounds
    if get_origin(hint) in (list, tuple):
        return "a list of strings"
    if hint is dict or get_origin(hint) is dict:
        return "a table"
    return str(hint)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_mqtt_url(url: str) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "ws", "wss"):
        return "expected mqtt://host:port or mqtts://host:port (or empty for offline)"
    if not parts.hostname:
        return "the URL has no host"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "the URL's port is not a number between 0 and 65535"
    return None


def _check_device_id(value: str) -> str | None:
    if value and (len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value)):
        return "expected at most 64 letters, digits, '-', '_' or '.' (it becomes an MQTT topic level)"
    return None


def _check_host(value: str) -> str | None:
    return None if value else "expected a host name or address"


def _check_sensor_machines(value: dict[str, Any]) -> str | None:
    from agent.sensors.spec import check_machines

    return check_machines(value)


def _check_device_kinds(value: tuple[str, ...]) -> str | None:
    unknown = [v for v in value if v not in ("npu", "tpu", "gpu", "cpu")]
    return f"unknown device kinds {unknown}; use npu, tpu, gpu, cpu" if unknown else None


_VALIDATORS: dict[str, typing.Callable[[Any], str | None]] = {
    "models.device_order": _check_device_kinds,
    "models.forbid_devices": _check_device_kinds,
    "sensors.machines": _check_sensor_machines,
    "mqtt.url": _check_mqtt_url,
    "device_id": _check_device_id,
    "api.host": _check_host,
}


# ---------------------------------------------------------------- showing


def settings_to_dict(settings: Any, *, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked unless asked otherwise."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        if f.metadata.get("internal"):
            continue
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = settings_to_dict(value, mask_secrets=mask_secrets)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = MASK if (mask_secrets and f.metadata.get("secret") and value) else value
    return out


def settings_to_toml(settings: Settings) -> str:
    """Render effective settings as TOML (secrets masked) for ``config show``."""
    data = settings_to_dict(settings)
    lines: list[str] = [f"# effective configuration (source: {settings.source})"]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if key not in tables:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def reference_rows(cls: type = Settings, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every setting: the README's configuration reference."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows.extend(reference_rows(hint, prefix + f.name + "."))
            continue
        type_name = _expected(hint, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((prefix + f.name, type_name, repr(default), f.metadata.get("doc", "")))
    return rows


__all__ = [
    "ApiSettings",
    "BusSettings",
    "LogSettings",
    "MqttSettings",
    "SecuritySettings",
    "SensorSettings",
    "Settings",
    "StoreSettings",
    "SupervisorSettings",
    "SyncSettings",
    "VoiceSettings",
    "load_settings",
    "settings_to_dict",
    "settings_to_toml",
]
