"""edge-agent: the daemon (supervisor, config, store, local API, pipelines, CLI)."""

from agent.core.version import __version__

__all__ = ["__version__"]
