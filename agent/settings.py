"""The settings tree: every section of the daemon's configuration, as frozen dataclasses.

Each field carries its documentation and bounds in ``setting(...)`` metadata,
so validation, ``config show`` and the README's reference all come from this
one place. Loading, environment overrides and validation are the ground
floor's (agent/core/settings.py, shared with the hub; agent/config.py says
where the daemon's come from); this module only says what can be configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.core import eventloop
from agent.core.settings import BrokerSettings, LogSettings, RootSettings, setting, source_field
from agent.settings_features import ModelsSettings, PluginSettings, SensorSettings, VoiceSettings


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
class MqttSettings(BrokerSettings):
    url: str = setting("", "Hub broker, mqtt://host:port or mqtts://host:port; empty means offline.")

    @property
    def enabled(self) -> bool:
        return bool(self.url)


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


@dataclass(frozen=True)
class Settings(RootSettings):
    device_id: str = setting("", "This box's id on the hub (default: derived from /etc/machine-id).")
    data_dir: str = setting(
        "",
        "Where the database, models and keys live (default: "
        "$STATE_DIRECTORY or /var/lib/edge-agent under systemd, else "
        "$XDG_DATA_HOME/edge-agent).",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = eventloop.choice_setting()
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
    source: str = source_field()

    @property
    def database_path(self) -> Path:
        return self.data_path / "edge-agent.db"
