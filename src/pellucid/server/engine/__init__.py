"""The engine: ids, validation, permissions and the rules of every resource.

It takes and returns plain records (pellucid.server.records); it never sees a
protobuf message or a gRPC context.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.concepts import Concepts
from pellucid.server.engine.requests import RequestLog
from pellucid.server.engine.users import Users
from pellucid.server.storage import MetadataStore


class Engine:
    """Every resource's rules, over one set of stores."""

    def __init__(self, store: MetadataStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.users = Users(store, clock)
        self.apps = Apps(store, clock)
        self.concepts = Concepts(store, self.apps, clock)
        self.requests = RequestLog(store, clock)

    def close(self) -> None:
        self.store.close()


__all__ = ["Engine", "Principal"]
