"""A synchronous Cosmos container for devhost's command-line tools (accounts, replay).

The app itself uses the asyncio client (:mod:`handlers.adapters.cosmos_store`); a
one-shot tool reads a few documents and is simpler with the synchronous SDK.
"""

from __future__ import annotations

import warnings
from typing import Any

from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from handlers.adapters.cosmos_store import CONTAINERS
from handlers.settings import Settings

__all__ = ["container"]


def container(settings: Settings, name: str) -> ContainerProxy:
    """The container ``name`` of the app's database (created, as the app would, when
    missing).

    Raises:
        ValueError: ``COSMOS_ENDPOINT`` is not set.
    """
    if not settings.cosmos_endpoint:
        raise ValueError("COSMOS_ENDPOINT is not set")
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    credential: Any = settings.cosmos_key
    if not credential:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    client = CosmosClient(settings.cosmos_endpoint, credential=credential)
    database = client.create_database_if_not_exists(settings.cosmos_database)
    return database.create_container_if_not_exists(
        id=name, partition_key=PartitionKey(path=CONTAINERS[name])
    )
