"""App settings for devhost: the environment first, then a ``local.settings.json`` file.

The Functions Core Tools read ``local.settings.json`` ``Values`` into the worker's
environment, and an environment variable that is already set wins over the file. devhost does
the same for ``run``, ``send`` and ``alerts``, so one settings file serves every command.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SETTINGS_FILE",
    "ENVIRONMENT",
    "SettingsError",
    "SourcedSettings",
    "apply_to_environ",
    "load_settings",
    "load_sourced_settings",
    "read_settings_file",
]

logger = logging.getLogger(__name__)

DEFAULT_SETTINGS_FILE = "local.settings.json"
#: Where a setting that the environment holds comes from, in messages.
ENVIRONMENT = "the environment"


class SettingsError(Exception):
    """The settings file named on the command line is missing or malformed."""


def _as_text(name: str, value: object, path: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise SettingsError(f"{path}: Values.{name} must be a string, got {type(value).__name__}")


def read_settings_file(path: Path) -> dict[str, str]:
    """Read the ``Values`` of a ``local.settings.json``-shaped file.

    Booleans and numbers are turned into text (``true``/``false``, ``5``) as func does.

    Raises:
        SettingsError: the file cannot be read, is not JSON, is encrypted
            (``"IsEncrypted": true``), or ``Values`` is not an object of scalars.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise SettingsError(f"{path}: expected a JSON object with a 'Values' object")
    if document.get("IsEncrypted") is True:
        raise SettingsError(f"{path} is encrypted (IsEncrypted: true); devhost reads plain values")
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise SettingsError(f"{path}: 'Values' must be an object")
    return {str(name): _as_text(str(name), value, path) for name, value in values.items()}


@dataclass(frozen=True)
class SourcedSettings:
    """Merged settings and where each came from: :data:`ENVIRONMENT` or the settings file
    (its name when it is the app's ``local.settings.json``, else the path as given)."""

    values: dict[str, str]
    sources: dict[str, str] = field(default_factory=dict)
    #: The settings file that was read (its name or path as in :attr:`sources`), if any.
    file: str | None = None

    def source(self, name: str) -> str:
        """Where setting ``name`` came from; for one that is not set, where it was looked
        for ("the environment or local.settings.json")."""
        found = self.sources.get(name)
        if found is not None:
            return found
        return f"{ENVIRONMENT} or {self.file}" if self.file else ENVIRONMENT

    def described(self, name: str) -> str:
        """``NAME (from <source>)``, for messages about a setting that is set."""
        return f"{name} (from {self.source(name)})"


def load_sourced_settings(
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> SourcedSettings:
    """As :func:`load_settings`, also recording where each value came from.

    Raises:
        SettingsError: ``settings_file`` was given and cannot be read, or a settings file
            is malformed.
    """
    env = dict(os.environ if environ is None else environ)
    label: str | None
    if settings_file is not None:
        path: Path | None = settings_file
        label = str(settings_file)
    else:
        candidate = (app_dir or Path.cwd()) / DEFAULT_SETTINGS_FILE
        path = candidate if candidate.is_file() else None
        label = DEFAULT_SETTINGS_FILE
    merged: dict[str, str] = {}
    sources: dict[str, str] = {}
    if path is not None:
        merged.update(read_settings_file(path))
        sources.update(dict.fromkeys(merged, label))
        logger.debug("read %d setting(s) from %s", len(merged), path)
    merged.update(env)
    sources.update(dict.fromkeys(env, ENVIRONMENT))
    return SourcedSettings(merged, sources, label)


def load_settings(
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Merge a settings file's ``Values`` under the environment (the environment wins).

    ``settings_file`` names the file; without it, ``<app_dir>/local.settings.json`` is used
    when it exists (``app_dir`` defaults to the current directory) and is simply skipped
    when it does not.

    Raises:
        SettingsError: ``settings_file`` was given and cannot be read, or a settings file
            is malformed.
    """
    return load_sourced_settings(app_dir, settings_file, environ).values


def apply_to_environ(
    settings: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> None:
    """Put every setting that is not already in the environment into it."""
    target = os.environ if environ is None else environ
    for name, value in settings.items():
        target.setdefault(name, value)
