"""Old import path of :mod:`agent.core.output`, kept for the ``edge-agent`` commands that import it here.

The hub's CLI (sync/hub) imports ``agent.core.output`` directly.
"""

from __future__ import annotations

from agent.core.output import print_json, table

__all__ = ["print_json", "table"]
