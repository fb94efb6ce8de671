"""The exceptions of tradeguard, one base class, classified by what the caller should do.

- :class:`InvalidMessage` — the message can never succeed: reject it and return.
- :class:`StaleAccountState` — a conditional write lost a race: re-read and re-apply.
- :class:`UnreadableDocument` — a stored document the app cannot read: never overwrite it;
  let the invocation fail so the host retries and finally poisons the message.
- :class:`TransientStoreError` — the store is unavailable: let it propagate (host retries).
- :class:`ConfigurationError` — settings or catalog are wrong: refuse to start.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InvalidMessage",
    "StaleAccountState",
    "TradeguardError",
    "TransientStoreError",
    "UnreadableDocument",
]


class TradeguardError(Exception):
    """Base class of every error tradeguard raises on purpose."""


class ConfigurationError(TradeguardError):
    """A setting or the instrument catalog is missing or malformed. ``setting`` and
    ``value`` name what was refused (None when the error is not about one setting); the
    message starts with ``<setting>=<value>:`` when they are known."""

    def __init__(self, message: str, setting: str | None = None, value: str | None = None):
        self.reason = message
        if setting is not None:
            message = (
                f"{setting}={value!r}: {message}" if value is not None else f"{setting}: {message}"
            )
        super().__init__(message)
        self.setting = setting
        self.value = value


class InvalidMessage(TradeguardError):
    """A message that can never be processed; carries the rejection reasons."""

    def __init__(self, reasons: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{code}: {message}" for code, message in reasons))
        self.reasons = reasons


class StaleAccountState(TradeguardError):
    """The account document changed between read and conditional write (ETag mismatch)."""


class UnreadableDocument(TradeguardError):
    """A stored document has an unknown schemaVersion or a wrong shape; never overwritten."""


class TransientStoreError(TradeguardError):
    """The store could not be reached or answered with a retryable error."""
