"""Old import path of :mod:`agent.core.routes`, kept for the device API's route modules that import it here.

The route table and the OpenAPI builder are the ground floor's, shared with
the hub's API (sync/hub), which imports ``agent.core.routes`` directly.
"""

from __future__ import annotations

from agent.core.routes import Route, openapi_document

__all__ = ["Route", "openapi_document"]
