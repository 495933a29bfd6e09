"""A model held for use: ``async with manager.use(name) as lease: await lease.infer(feed)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.core.errors import ConflictError
from models.scheduling import Priority

if TYPE_CHECKING:
    from models.dispatch import Dispatcher
    from models.loaded import LoadedModel, ModelRecord
    from runtimes.base import Session


class ModelLease:
    """One session of a loaded model for the holder alone (``session``), until the ``use`` block ends.

    ``infer`` runs on that session: inline when the model is fast, else on an
    inference thread at the lease's priority.
    """

    def __init__(
        self,
        dispatch: Dispatcher,
        entry: LoadedModel,
        record: ModelRecord,
        session: Session,
        priority: Priority,
    ) -> None:
        self._dispatch = dispatch
        self._entry = entry
        self._record = record
        self.session = session
        self.priority = priority

    @property
    def name(self) -> str:
        return self._entry.name

    @property
    def version(self) -> str:
        return self._entry.installed.version

    async def infer(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        self.session.check_feed(feed)
        dispatch, pool = self._dispatch, self._entry.pool
        if not dispatch.started:
            raise ConflictError("the model manager is not started")
        if dispatch.inline_ok(pool):
            out, seconds = dispatch.run_inline(pool, self.session, feed)
        else:
            out, timing = await dispatch.run_bound(pool, self.session, feed, self.priority)
            seconds = timing.run_s
        self._record.latency.add(seconds)
        return out
