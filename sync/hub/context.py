"""What the hub's API handlers share, built once by the service and passed explicitly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sync.hub.bundles import BundleStore
from sync.hub.commands import CommandCenter
from sync.hub.db import HubDB
from sync.hub.deploy import Deployer
from sync.hub.intake import Intake
from sync.hub.keys import HubKeys
from sync.hub.settings import HubSettings
from sync.hub.tokens import HubTokens


@dataclass
class HubContext:
    settings: HubSettings
    #: the API's own connection (the intake writes through another one)
    db: HubDB
    keys: HubKeys
    commands: CommandCenter
    bundles: BundleStore
    deployer: Deployer
    #: operator tokens (the API's connection)
    tokens: HubTokens
    intake: Intake | None = None
    instance_id: str = ""
    mqtt_connected: object = None  # a callable -> bool, when there is a broker connection
    started_at: float = field(default_factory=time.time)

    def broker_connected(self) -> bool:
        return bool(self.mqtt_connected()) if callable(self.mqtt_connected) else False
