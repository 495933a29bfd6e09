"""Offline-first sync with the hub: outbox/inbox, MQTT client, telemetry, commands, and the hub."""
