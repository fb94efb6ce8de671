"""LedgerStore on Azure Cosmos DB (SQL API): document mapping, ETag writes, error translation.

One client per process (built by :mod:`handlers.bootstrap`). Containers are created when
missing: ``ledger`` (/accountId), ``marks`` (/symbol), ``deadletters`` (/queue).

SDK retry settings (docs/reliability.md): throttling (429) is retried by the SDK up to 9
times within 30 s (its defaults); connection errors are retried 3 times with a short
back-off and requests time out after 10 s, after which the error reaches the host, which
retries the whole message and finally poisons it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from handlers.core.documents import ACCOUNT_ID, AccountDoc, account_from_document
from handlers.errors import StaleAccountState, TransientStoreError, UnreadableDocument

__all__ = ["CONTAINERS", "CosmosLedgerStore", "connect"]

logger = logging.getLogger(__name__)

CONTAINERS: Mapping[str, str] = {
    "ledger": "/accountId",
    "marks": "/symbol",
    "deadletters": "/queue",
}
T = TypeVar("T")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _translate(call: Callable[[], T], what: str) -> T:
    """Run an SDK call, turning unavailability into TransientStoreError."""
    try:
        return call()
    except (
        CosmosResourceNotFoundError,
        CosmosResourceExistsError,
        CosmosAccessConditionFailedError,
    ):
        raise
    except CosmosHttpResponseError as exc:
        raise TransientStoreError(
            f"{what}: Cosmos answered {exc.status_code}: {exc.message}"
        ) from exc
    except (ServiceRequestError, ServiceResponseError, AzureError, OSError) as exc:
        raise TransientStoreError(f"{what}: Cosmos unreachable: {exc}") from exc


def connect(endpoint: str, key: str | None, database: str) -> CosmosClient:
    """A Cosmos client with this project's retry settings; the key, or managed identity.

    Raises:
        TransientStoreError: never here (the client connects lazily).
    """
    host = urlparse(endpoint).hostname or ""
    if host in _LOCAL_HOSTS:
        # The local stand-in serves a self-signed certificate; the SDK skips verification
        # for loopback endpoints by itself and urllib3 would warn on every request.
        import urllib3

        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    credential: Any
    if key:
        credential = key
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return CosmosClient(
        endpoint,
        credential=credential,
        connection_timeout=10,
        retry_total=3,
        retry_connect=3,
        retry_read=2,
        retry_backoff_max=2,
        retry_backoff_factor=0.3,
        # Writes may be retried after a lost response: every write here is conditional
        # (ETag), a create (409 when it landed) or an idempotent upsert, and the service
        # treats 412/409 as "re-read and see" — so a retried write never applies twice.
        retry_write=2,
    )


class CosmosLedgerStore:
    """The ledger, marks and deadletters containers of one database."""

    def __init__(self, client: CosmosClient, database: str) -> None:
        self._client = client
        self._database_name = database
        self._containers: dict[str, ContainerProxy] = {}

    def ensure(self) -> None:
        """Create the database and containers if missing.

        Raises:
            TransientStoreError: Cosmos is unreachable.
        """

        def create() -> None:
            db = self._client.create_database_if_not_exists(self._database_name)
            for name, path in CONTAINERS.items():
                self._containers[name] = db.create_container_if_not_exists(
                    id=name, partition_key=PartitionKey(path=path)
                )

        _translate(create, "create containers")

    def container(self, name: str) -> ContainerProxy:
        if name not in self._containers:
            self.ensure()
        return self._containers[name]

    # -- reads -------------------------------------------------------------------------

    def _read(self, container: str, item: str, partition: str) -> dict[str, Any] | None:
        proxy = self.container(container)
        try:
            return _translate(
                lambda: proxy.read_item(item=item, partition_key=partition),
                f"read {container}/{partition}/{item}",
            )
        except CosmosResourceNotFoundError:
            return None

    def read_account(self, account_id: str) -> AccountDoc | None:
        doc = self._read("ledger", ACCOUNT_ID, account_id)
        if doc is None:
            return None
        account = account_from_document(doc)
        if account.account_id != account_id:
            raise UnreadableDocument(f"account document of {account_id} names {account.account_id}")
        return account

    def read_record(self, partition: str, record_id: str) -> Mapping[str, Any] | None:
        return self._read("ledger", record_id, partition)

    def read_mark(self, symbol: str) -> Mapping[str, Any] | None:
        return self._read("marks", "@mark", symbol)

    def list_holders(self, symbol: str) -> list[tuple[str, str]]:
        proxy = self.container("marks")
        rows = _translate(
            lambda: list(
                proxy.query_items(
                    "SELECT c.accountId, c._etag FROM c WHERE c.symbol = @symbol AND c.type = 'holder'",
                    parameters=[{"name": "@symbol", "value": symbol}],
                    partition_key=symbol,
                )
            ),
            f"list holders of {symbol}",
        )
        return [(str(r["accountId"]), str(r["_etag"])) for r in rows]

    def upsert_holder(self, symbol: str, account_id: str) -> None:
        proxy = self.container("marks")
        body = {
            "id": f"holder:{account_id}",
            "symbol": symbol,
            "accountId": account_id,
            "type": "holder",
            "schemaVersion": 1,
        }
        _translate(lambda: proxy.upsert_item(body=body), f"upsert holder {symbol}/{account_id}")

    def delete_holder(self, symbol: str, account_id: str, etag: str) -> bool:
        proxy = self.container("marks")
        try:
            _translate(
                lambda: proxy.delete_item(
                    item=f"holder:{account_id}",
                    partition_key=symbol,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                ),
                f"delete holder {symbol}/{account_id}",
            )
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            return False
        return True

    def read_deadletter(self, queue: str, deadletter_id: str) -> Mapping[str, Any] | None:
        return self._read("deadletters", deadletter_id, queue)

    # -- writes ------------------------------------------------------------------------

    def _write(self, container: str, document: Mapping[str, Any], etag: str | None) -> None:
        proxy = self.container(container)
        body = dict(document)
        try:
            if etag is None:
                _translate(lambda: proxy.create_item(body=body), f"create {container}")
            else:
                _translate(
                    lambda: proxy.replace_item(
                        item=body["id"],
                        body=body,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    ),
                    f"replace {container}",
                )
        except (CosmosAccessConditionFailedError, CosmosResourceExistsError) as exc:
            raise StaleAccountState(f"{container} {body.get('id')} changed concurrently") from exc
        except CosmosResourceNotFoundError as exc:  # replaced a document deleted meanwhile
            raise StaleAccountState(f"{container} {body.get('id')} vanished") from exc

    def write_account(self, document: Mapping[str, Any], etag: str | None) -> None:
        self._write("ledger", document, etag)

    def write_mark(self, document: Mapping[str, Any], etag: str | None) -> None:
        self._write("marks", document, etag)

    def create_record(self, record: Mapping[str, Any]) -> bool:
        proxy = self.container("ledger")
        try:
            _translate(lambda: proxy.create_item(body=dict(record)), "create record")
        except CosmosResourceExistsError:
            return False
        return True

    def record_deadletter(self, document: Mapping[str, Any]) -> bool:
        proxy = self.container("deadletters")
        for _ in range(20):
            try:
                _translate(lambda: proxy.create_item(body=dict(document)), "create deadletter")
                return True
            except CosmosResourceExistsError:
                pass
            current = self.read_deadletter(str(document["queue"]), str(document["id"]))
            if current is None:
                continue
            updated = {k: v for k, v in current.items() if not k.startswith("_")}
            updated["count"] = int(current.get("count", 1)) + 1
            updated["lastSeen"] = document["lastSeen"]
            if document.get("lastError"):
                updated["lastError"] = document["lastError"]
            try:
                self._write("deadletters", updated, current["_etag"])
                return False
            except StaleAccountState:
                continue
        raise TransientStoreError(f"deadletter {document['id']}: too many concurrent updates")
