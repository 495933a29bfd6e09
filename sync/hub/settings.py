"""The hub's settings: frozen dataclasses from TOML + ``EDGE_HUB_...`` variables + CLI flags.

Built with the same machinery as the agent's (the loader in agent/core/settings.py): every field
is a documented ``setting(...)``, a bad value stops the start with a
ConfigError naming where it came from. Precedence: embedded defaults < TOML
file < ``EDGE_HUB_...`` variables < ``edge-hub run`` flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.core import eventloop
from agent.core.errors import ConfigError
from agent.core.settings import (
    BrokerSettings,
    LogSettings,
    Program,
    RootSettings,
    check_host,
    check_mqtt_url,
    setting,
    source_field,
)

DEFAULT_HUB_CONFIG_PATH = Path("/etc/edge-hub/hub.toml")
HUB_ENV_PREFIX = "EDGE_HUB_"
_CLI_ONLY_ENV = frozenset({HUB_ENV_PREFIX + "URL", HUB_ENV_PREFIX + "TOKEN"})


@dataclass(frozen=True)
class HubApiSettings:
    host: str = setting(
        "127.0.0.1",
        "Address the operator API binds to. Off loopback the hub refuses to start unless operator "
        "tokens exist (edge-hub tokens create) and TLS is set (api.tls_cert, api.tls_key).",
    )
    tls_cert: str = setting("", "PEM certificate (chain) for HTTPS on the operator API; empty: plain HTTP.")
    tls_key: str = setting("", "PEM private key for api.tls_cert.")
    command_rate_per_s: float = setting(
        2.0,
        "Requests that sign commands (commands, deployments, key rotation) each operator token may make "
        "per second on average; more get 429 with Retry-After.",
        minimum=0.01,
        maximum=10_000,
    )
    command_burst: int = setting(
        20, "Such requests one token may make at once before command_rate_per_s applies.", minimum=1
    )
    port: int = setting(8480, "TCP port of the operator API.", minimum=0, maximum=65535)
    max_body_bytes: int = setting(
        1_048_576, "Largest JSON request body accepted; bigger ones get 413.", minimum=1024, maximum=1 << 30
    )
    max_bundle_bytes: int = setting(
        4 << 30, "Largest model bundle an operator may upload.", minimum=1024, maximum=1 << 40
    )
    public_url: str = setting(
        "",
        "Base URL devices use to download bundles from this hub (e.g. http://hub.lan:8480); "
        "empty: http://{host}:{port}, which only works for devices that can reach that address.",
    )


@dataclass(frozen=True)
class HubMqttSettings(BrokerSettings):
    url: str = setting("mqtt://127.0.0.1:1883", "Broker, mqtt://host:port or mqtts://host:port.")
    client_id: str = setting(
        "",
        "This instance's MQTT client id; its session is persistent (messages that arrive while the hub "
        "is stopped wait at the broker, for session_expiry_s). Empty: a stable id derived from the host "
        "name, data_dir, database and API port (edge-hub-<hash>), the same at every restart. Instances "
        "sharing one database on one host need different ids (or API ports).",
    )
    session_expiry_s: int = setting(
        3600,
        "How long the broker keeps a named instance's session while it is away.",
        minimum=0,
        maximum=7 * 86400,
    )
    share_group: str = setting(
        "",
        "MQTT 5 shared-subscription group ('hub'): instances in one group split the messages. Empty "
        "(default): one instance with a plain subscription in its persistent session. Mosquitto 2.0 "
        "does not restore shared subscriptions after a broker restart, so what devices publish "
        "before the hub re-subscribes is lost; use a group with several instances on a broker that "
        "persists them, or accept that gap.",
    )
    receive_maximum: int = setting(
        2000,
        "QoS 1 messages the broker may have in flight to this instance. Messages are acknowledged "
        "only once stored, so this bounds how many a batch can hold.",
        minimum=1,
        maximum=65535,
    )
    retained_catchup_s: float = setting(
        2.0,
        "After connecting, also read the retained device states for this many seconds (shared "
        "subscriptions never deliver retained messages); 0 turns it off.",
        minimum=0,
        maximum=60,
    )


@dataclass(frozen=True)
class IntakeSettings:
    batch_size: int = setting(500, "Most messages written in one transaction.", minimum=1, maximum=100_000)
    linger_s: float = setting(
        0.0,
        "How long a batch waits for more messages after the first (0: take what is queued; "
        "batches still grow under load while the previous one commits).",
        minimum=0,
        maximum=5,
    )
    queue_size: int = setting(
        20_000,
        "Messages waiting to be stored. When full, the MQTT reader blocks (back-pressure to the "
        "broker, which holds them): nothing is dropped.",
        minimum=10,
        maximum=10_000_000,
    )
    max_message_bytes: int = setting(
        256 * 1024,
        "Largest message payload accepted; bigger ones are rejected.",
        minimum=1024,
        maximum=64 << 20,
    )
    synchronous: Literal["full", "normal"] = setting(
        "full",
        "SQLite synchronous mode. full: a message acknowledged to the broker survives power loss; "
        "normal: faster, may lose the last batches on power loss.",
    )


@dataclass(frozen=True)
class NotifySettings:
    smtp_host: str = setting("", "SMTP server for e-mail notifications (empty: e-mail rules cannot be sent).")
    smtp_port: int = setting(
        25, "SMTP port (587 with smtp_starttls, 465 with smtp_tls).", minimum=1, maximum=65535
    )
    smtp_starttls: bool = setting(False, "Upgrade the SMTP connection with STARTTLS before logging in.")
    smtp_tls: bool = setting(False, "Connect to the SMTP server over TLS from the start (port 465).")
    smtp_user: str = setting("", "SMTP user name (empty: no login).")
    smtp_password: str = setting("", "SMTP password.", secret=True)
    smtp_from: str = setting("edge-hub@localhost", "Sender address of notification e-mails.")
    timeout_s: float = setting(10.0, "Seconds one delivery may take.", minimum=0.5, maximum=300)
    retry_initial_s: float = setting(
        2.0,
        "Delay before the first retry of a failed delivery; doubles each time.",
        minimum=0.05,
        maximum=3600,
    )
    retry_max_s: float = setting(600.0, "Longest delay between two retries.", minimum=0.1, maximum=86400)
    max_attempts: int = setting(
        10, "Deliveries tried before a notification is given up (status failed).", minimum=1, maximum=1000
    )


@dataclass(frozen=True)
class EnrolSettings:
    mqtt_url: str = setting(
        "",
        "Broker URL given to devices at enrolment and named in the LAN advertisement (run --advertise); "
        "empty: mqtt.url. Set it when the hub reaches the broker by another address than devices do.",
    )
    token_ttl_s: float = setting(
        3600.0, "How long a claim token of `edge-hub enroll` stays valid.", minimum=60, maximum=30 * 86400
    )
    advertise_name: str = setting(
        "", "This hub's name in the zeroconf advertisement (empty: edge-hub-<host name>)."
    )


@dataclass(frozen=True)
class HubSettings(RootSettings):
    data_dir: str = setting(
        "",
        "Where the hub keeps its database, signing key and bundles (default: $STATE_DIRECTORY, "
        "else $XDG_DATA_HOME/edge-hub).",
    )
    db: str = setting(
        "",
        "SQLite file path, or a PostgreSQL DSN postgresql://user@host/dbname (needs psycopg). "
        "Empty: {data_dir}/hub.db.",
        secret=True,
    )
    key_file: str = setting("", "The hub's Ed25519 signing key (hex, mode 0600). Empty: {data_dir}/hub.key.")
    command_ttl_s: float = setting(
        300.0, "How long a command stays valid after it is signed.", minimum=5, maximum=7 * 86400
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = eventloop.choice_setting()
    api: HubApiSettings = field(default_factory=HubApiSettings)
    mqtt: HubMqttSettings = field(default_factory=HubMqttSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    log: LogSettings = field(default_factory=LogSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    enroll: EnrolSettings = field(default_factory=EnrolSettings)

    source: str = source_field()

    @property
    def db_url(self) -> str:
        return self.db or str(self.data_path / "hub.db")

    @property
    def key_path(self) -> Path:
        return Path(self.key_file) if self.key_file else self.data_path / "hub.key"

    @property
    def bundles_path(self) -> Path:
        return self.data_path / "bundles"

    @property
    def api_base_url(self) -> str:
        """Where the CLI reaches this hub's API."""
        host = "127.0.0.1" if self.api.host in ("0.0.0.0", "::", "") else self.api.host
        return f"{'https' if self.api.tls_cert else 'http'}://{host}:{self.api.port}"

    @property
    def device_mqtt_url(self) -> str:
        """The broker URL devices are given (enrolment, LAN advertisement)."""
        return self.enroll.mqtt_url or self.mqtt.url

    @property
    def public_base_url(self) -> str:
        return (self.api.public_url or self.api_base_url).rstrip("/")


def derived_client_id(settings: HubSettings) -> str:
    """A stable MQTT client id for this instance when none is configured: the same at every restart.

    Derived from what identifies an instance and does not change when it
    restarts (or its key rotates): the host, its data directory, its database
    and its API port. Two instances on one host differ in at least one of them.
    """
    import hashlib
    import socket

    db = settings.db_url
    if "://" not in db:
        db = str(Path(db).resolve())
    seed = "\0".join((socket.gethostname(), str(settings.data_path.resolve()), db, str(settings.api.port)))
    return "edge-hub-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


#: the checks beyond type and bounds (the same as the agent's for the keys both have)
VALIDATORS = {"mqtt.url": check_mqtt_url, "api.host": check_host}
#: the hub's settings: /etc/edge-hub/hub.toml, EDGE_HUB_ variables; EDGE_HUB_URL and EDGE_HUB_TOKEN
#: are for the CLI (the API to talk to, and how), not settings
PROGRAM = Program("edge-hub", HubSettings, HUB_ENV_PREFIX, DEFAULT_HUB_CONFIG_PATH, VALIDATORS, _CLI_ONLY_ENV)


def load_hub_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> HubSettings:
    """Defaults < TOML file < EDGE_HUB_ variables < ``overrides`` (dotted keys from CLI flags).

    ``path=None`` uses /etc/edge-hub/hub.toml when it exists (or $EDGE_HUB_CONFIG, which must exist).
    """
    settings = PROGRAM.load(path, env, overrides)
    source = settings.source
    if bool(settings.api.tls_cert) != bool(settings.api.tls_key):
        raise ConfigError(f"{source}: api.tls_cert and api.tls_key must be set together")
    if settings.mqtt.share_group and any(c in settings.mqtt.share_group for c in "/+#"):
        raise ConfigError(f"{source}: mqtt.share_group must be one topic level (no '/', '+', '#')")
    return settings


__all__ = [
    "EnrolSettings",
    "HubApiSettings",
    "HubMqttSettings",
    "HubSettings",
    "IntakeSettings",
    "NotifySettings",
    "derived_client_id",
    "load_hub_settings",
]
