"""edge-hub: the fleet manager beside the broker.

Device registry, intake of state/telemetry/alerts/events/results over MQTT 5
shared subscriptions (several instances split the load, each message stored
once), signed commands, staged model rollout, an operator REST API and the
``edge-hub`` CLI. SQLite by default, PostgreSQL given a DSN.
"""
