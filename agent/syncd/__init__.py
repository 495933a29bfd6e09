"""The daemon's side of sync: the services it supervises and what they act on.

``sync/`` is the protocol and its parts (envelopes, outbox, MQTT client,
publisher, inbox, telemetry), which import only the ground floor
(``agent.core``). What needs the daemon lives here: the sync services and
their runtime (``service``), the built-in commands that act on its settings,
supervisor and trust store (``commands``, ``commands_alerts``), remote
settings (``overrides``), the device's deployer (``deploy``) and the log
ring for ``logs.tail`` (``logring``).
"""
