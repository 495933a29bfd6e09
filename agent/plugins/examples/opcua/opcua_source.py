"""OPC UA source: subscribe to node ids (asyncua) and emit each data change as a reading.

Each node has its own sampling interval (how often the server samples it);
the subscription's publishing interval says how often changes are sent. With
Basic256Sha256 the session is signed (and encrypted) with this client's
certificate. A lost session (the server's watchdog, a closed socket) is
re-opened with a doubling back-off, and the subscription made again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agent.plugins.sdk import Plugin


@dataclass(frozen=True)
class NodeSpec:
    channel: str
    node_id: str
    sampling_ms: float = 100.0
    scale: float = 1.0
    offset: float = 0.0


def parse_nodes(table: dict[str, Any]) -> list[NodeSpec]:
    if not table:
        raise ValueError("plugins.config.opcua.nodes is empty: map at least one node id to a channel")
    out = []
    for channel, spec in table.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("node_id"), str):
            raise ValueError(f"node {channel}: expected a table with a string node_id (e.g. 'ns=2;i=7')")
        out.append(
            NodeSpec(
                channel,
                spec["node_id"],
                float(spec.get("sampling_ms", 100.0)),
                float(spec.get("scale", 1.0)),
                float(spec.get("offset", 0.0)),
            )
        )
    return out


class _Handler:
    def __init__(self, plugin: OpcUaSource, channels: dict[str, NodeSpec]) -> None:
        self.plugin = plugin
        self.channels = channels

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        spec = self.channels.get(node.nodeid.to_string())
        if spec is None or isinstance(val, bool) or not isinstance(val, (int, float)):
            self.plugin.bad_values += 1
            return
        stamp = getattr(data.monitored_item.Value, "SourceTimestamp", None)
        ts = stamp.timestamp() if stamp is not None else None
        self.plugin.changes += 1
        self.plugin.ctx.emit(self.plugin.machine, {spec.channel: float(val) * spec.scale + spec.offset}, ts)

    def status_change_notification(self, status: Any) -> None:
        self.plugin.lost.set()  # the server ended the subscription: reconnect


class OpcUaSource(Plugin):
    async def run(self) -> None:
        s = self.ctx.settings
        if not s["endpoint"]:
            raise ValueError("plugins.config.opcua.endpoint is empty: set the server's opc.tcp:// address")
        self.nodes = parse_nodes(s["nodes"])
        self.machine = s["machine"]
        self.changes = self.bad_values = self.reconnects = 0
        self.lost = asyncio.Event()
        delay = 0.5
        while True:
            try:
                await self._session()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.ctx.log.warning(
                    "OPC UA session ended (%s); reconnecting in %.1f s", exc or type(exc).__name__, delay
                )
            self.reconnects += 1
            self._report(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _session(self) -> None:
        from asyncua import Client

        s = self.ctx.settings
        client = Client(s["endpoint"], timeout=s["timeout_s"], watchdog_intervall=1.0)
        if s["security"] != "None":
            if not s["cert_file"] or not s["key_file"]:
                raise ValueError("Basic256Sha256 needs plugins.config.opcua.cert_file and key_file")
            client.application_uri = s["application_uri"]
            parts = [s["security"], s["mode"], s["cert_file"], s["key_file"]]
            if s["server_cert_file"]:
                parts.append(s["server_cert_file"])
            await client.set_security_string(",".join(parts))
        self.lost.clear()
        async with client:
            handler = _Handler(self, {})
            sub = await client.create_subscription(s["publishing_ms"], handler)
            for spec in self.nodes:
                node = client.get_node(spec.node_id)
                handler.channels[node.nodeid.to_string()] = spec
                # asyncua types sampling_interval as its ua.Double alias; a float is what it sends
                await sub.subscribe_data_change(node, sampling_interval=spec.sampling_ms)  # type: ignore[call-overload]
            self._report(True)
            while not self.lost.is_set():
                await asyncio.sleep(1.0)
                await client.check_connection()  # raises when the watchdog saw the session die
                self._report(True)

    def _report(self, connected: bool) -> None:
        self.ctx.status(
            connected=connected, changes=self.changes, bad_values=self.bad_values, reconnects=self.reconnects
        )
