"""edge-agent: the daemon (supervisor, config, store, local API, pipelines, CLI)."""

__version__ = "0.1.0"
