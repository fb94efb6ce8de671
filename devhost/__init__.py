"""devhost: run tradeguard's queue-triggered functions locally without the Functions host.

``python -m devhost run`` serves the app's queue triggers with the Storage Queues
extension's semantics, ``python -m devhost services start|stop|status`` manages the local
Azurite and Cosmos DB stand-ins, and ``python -m devhost send|alerts|decisions`` feeds and
reads the queues for a demo. See docs/devhost.md.
"""

from __future__ import annotations

__all__: list[str] = []
