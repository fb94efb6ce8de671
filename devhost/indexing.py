"""Index a v2 Python function app the way the language worker and the host do.

The real Python worker validates every function while indexing, before any message arrives,
and refuses an app whose parameters and bindings do not match; the host then resolves
``%SETTING%`` binding expressions and validates queue names. :func:`index_app` does both and
raises :class:`FunctionLoadError` with messages modelled on the worker's, so that what
devhost loads also loads in Azure.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import azure.functions as func
from azure.functions import _abc as azf_abc
from azure.functions import meta

from devhost.ncrontab import CronSchedule, ScheduleError, parse_schedule

__all__ = [
    "FunctionLoadError",
    "IndexedApp",
    "QueueFunction",
    "QueueOutput",
    "TimerFunction",
    "index_app",
    "resolve_expression",
    "validate_queue_name",
]

logger = logging.getLogger(__name__)

DEFAULT_CONNECTION = "AzureWebJobsStorage"
_SETTING_EXPRESSION = re.compile(r"%([^%]+)%")
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_SERVED_TRIGGERS = {"queueTrigger", "timerTrigger"}
#: The host monitors (persists the status of) a schedule that recurs at most once a minute
#: unless the function says otherwise (``useMonitor``).
_MONITOR_MIN_INTERVAL = 60.0
TriggerKind = Literal["message", "str", "bytes"]


class FunctionLoadError(Exception):
    """The app cannot be served: a function whose parameters and bindings do not match, an
    unresolvable ``%SETTING%``, an invalid queue name, or a binding devhost cannot serve."""

    def __init__(self, function_name: str, message: str) -> None:
        super().__init__(f"cannot load the {function_name} function: {message}")
        self.function_name = function_name


@dataclass(frozen=True)
class QueueOutput:
    """A queue output binding: the parameter (or ``$return``) and where it writes."""

    param: str
    queue_name: str
    connection: str


@dataclass(frozen=True)
class QueueFunction:
    """A queue-triggered function, its bindings resolved against the settings."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    trigger_param: str
    trigger_kind: TriggerKind
    queue_name: str
    connection: str
    outputs: tuple[QueueOutput, ...]
    return_output: QueueOutput | None
    context_param: str | None


@dataclass(frozen=True)
class TimerFunction:
    """A timer-triggered function, its schedule parsed (``%SETTING%`` resolved)."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    trigger_param: str
    schedule: CronSchedule
    run_on_startup: bool
    use_monitor: bool
    outputs: tuple[QueueOutput, ...]
    return_output: QueueOutput | None
    context_param: str | None


@dataclass(frozen=True)
class IndexedApp:
    """What devhost serves, and what it skips (function name, reason)."""

    queue_functions: tuple[QueueFunction, ...]
    skipped: tuple[tuple[str, str], ...]
    timer_functions: tuple[TimerFunction, ...] = ()


def resolve_expression(text: str, settings: Mapping[str, str], function_name: str) -> str:
    """Replace every ``%NAME%`` in ``text`` with the app setting ``NAME``.

    Raises:
        FunctionLoadError: a setting is missing (the host fails the same way at start-up).
    """

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        value = settings.get(name)
        if value is None:
            raise FunctionLoadError(
                function_name, f"'%{name}%' does not resolve to a value (no app setting {name})"
            )
        return value

    return _SETTING_EXPRESSION.sub(lookup, text)


def validate_queue_name(name: str, function_name: str) -> str:
    """Normalise a queue name to lower case and check Azure's naming rules.

    Raises:
        FunctionLoadError: the name is not 3-63 characters of lower-case letters, digits
            and single hyphens, starting and ending with a letter or digit.
    """
    normalised = name.lower()
    if not _QUEUE_NAME.match(normalised):
        raise FunctionLoadError(
            function_name,
            f"Invalid queue name: {name}. A queue name must be 3-63 characters, lower-case "
            "letters, digits and single hyphens, starting and ending with a letter or digit",
        )
    return normalised


def _type_name(annotation: object) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def _is_out_annotation(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    candidate = origin if origin is not None else annotation
    return isinstance(candidate, type) and candidate.__name__ == "Out"


def _annotation_fits(binding_type: str, py_type: object, output: bool) -> bool:
    """The worker's check: str/bytes go through its generic converter, the rest through
    the converter registered for the binding type."""
    if py_type in (str, bytes):
        return True
    registry: Any = cast(Any, meta).get_binding_registry()
    converter = registry.get(binding_type)
    if converter is None:
        return True  # devhost has no converter to check against; the binding is refused later
    try:
        if output:
            return bool(converter.check_output_type_annotation(py_type))
        return bool(converter.check_input_type_annotation(py_type))
    except TypeError:  # issubclass() on something that is not a class
        return False


def _mismatch(name: str, binding: Mapping[str, Any], py_type: object) -> str:
    return (
        f'{name!r} binding type "{binding.get("type")}" and dataType '
        f'"{binding.get("dataType")}" in function.json do not match the corresponding '
        f'function parameter\'s Python type annotation "{_type_name(py_type)}"'
    )


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return dict(getattr(function, "__annotations__", {}))


def _validate_signature(
    name: str, function: Callable[..., Any], bindings: list[dict[str, Any]]
) -> str | None:
    """Check parameters against bindings like the worker; return the context parameter.

    Raises:
        FunctionLoadError: a parameter without a binding, a binding without a parameter,
            an ``Out`` annotation on an input (or none on an output), or an annotation the
            binding's converter does not accept.
    """
    signature = inspect.signature(function)
    hints = _type_hints(function)
    params = dict(signature.parameters)
    bound = {b["name"]: b for b in bindings if b.get("name") != "$return"}

    context_param: str | None = None
    if "context" in params and "context" not in bound:
        context_param = "context"
        params.pop("context")
        annotation = hints.get("context", inspect.Parameter.empty)
        if annotation is not inspect.Parameter.empty and not (
            isinstance(annotation, type) and annotation.__name__ == "Context"
        ):
            raise FunctionLoadError(
                name,
                'the "context" parameter is expected to be of type azure.functions.Context, '
                f"got {annotation!r}",
            )

    missing = set(params) - set(bound)
    if missing:
        raise FunctionLoadError(
            name,
            "the following parameters are declared in Python but not in function.json: "
            f"{missing!r}",
        )
    extra = set(bound) - set(params)
    if extra:
        raise FunctionLoadError(
            name,
            f"the following parameters are declared in function.json but not in Python: {extra!r}",
        )

    for param_name in params:
        binding = bound[param_name]
        annotation = hints.get(param_name, inspect.Parameter.empty)
        is_param_out = annotation is not inspect.Parameter.empty and _is_out_annotation(annotation)
        is_binding_out = str(binding.get("direction", "IN")).upper() == "OUT"
        if is_binding_out and not is_param_out:
            raise FunctionLoadError(
                name,
                f'binding {param_name} is declared to have the "out" direction, but its '
                "annotation in Python is not a subclass of azure.functions.Out",
            )
        if is_param_out and not is_binding_out:
            raise FunctionLoadError(
                name,
                f'binding {param_name} is declared to have the "in" direction in '
                "function.json, but its annotation is azure.functions.Out in Python",
            )
        if annotation is inspect.Parameter.empty:
            continue
        py_type: object = annotation
        if is_param_out:
            args = typing.get_args(annotation)
            if len(args) != 1:
                raise FunctionLoadError(
                    name, f"binding {param_name} has invalid Out annotation {annotation!r}"
                )
            py_type = args[0]
        if not _annotation_fits(str(binding.get("type")), py_type, is_param_out):
            raise FunctionLoadError(name, _mismatch(param_name, binding, py_type))

    return_binding = next((b for b in bindings if b.get("name") == "$return"), None)
    return_annotation = hints.get("return", inspect.Parameter.empty)
    if return_binding is not None and return_annotation is not inspect.Parameter.empty:
        if _is_out_annotation(return_annotation):
            raise FunctionLoadError(name, "return annotation should not be azure.functions.Out")
        if not isinstance(return_annotation, type) and typing.get_origin(return_annotation) is None:
            raise FunctionLoadError(
                name, f"return annotation must be a Python type, got {return_annotation!r}"
            )
        if not _annotation_fits(str(return_binding.get("type")), return_annotation, True):
            raise FunctionLoadError(
                name,
                f'Python return annotation "{_type_name(return_annotation)}" does not match '
                f'binding type "{return_binding.get("type")}"',
            )
    return context_param


def _trigger_kind(name: str, param: str, annotation: object) -> TriggerKind:
    if annotation is inspect.Parameter.empty:
        return "message"
    if annotation is str:
        return "str"
    if annotation is bytes:
        return "bytes"
    if isinstance(annotation, type) and issubclass(annotation, azf_abc.QueueMessage):
        return "message"
    raise FunctionLoadError(
        name,
        f'{param!r} binding type "queueTrigger" does not match the corresponding function '
        f'parameter\'s Python type annotation "{_type_name(annotation)}" (expected '
        "azure.functions.QueueMessage, str or bytes)",
    )


def _queue_binding(
    name: str, binding: Mapping[str, Any], settings: Mapping[str, str]
) -> tuple[str, str]:
    raw_queue = binding.get("queueName")
    if not isinstance(raw_queue, str) or not raw_queue:
        raise FunctionLoadError(name, f"binding {binding.get('name')} has no queueName")
    queue_name = validate_queue_name(resolve_expression(raw_queue, settings, name), name)
    connection = resolve_expression(
        str(binding.get("connection") or DEFAULT_CONNECTION), settings, name
    )
    return queue_name, connection


def _output_bindings(
    name: str,
    bindings: list[dict[str, Any]],
    trigger: Mapping[str, Any],
    settings: Mapping[str, str],
) -> tuple[tuple[QueueOutput, ...], QueueOutput | None]:
    """The queue output bindings of a function (``$return`` apart).

    Raises:
        FunctionLoadError: a binding other than the trigger and queue outputs.
    """
    outputs: list[QueueOutput] = []
    return_output: QueueOutput | None = None
    for binding in bindings:
        if binding is trigger:
            continue
        is_out = str(binding.get("direction", "IN")).upper() == "OUT"
        if binding.get("type") != "queue" or not is_out:
            raise FunctionLoadError(
                name,
                f"devhost cannot serve binding {binding.get('name')!r} of type "
                f"{binding.get('type')!r} (direction {binding.get('direction')}); it serves "
                "queue and timer triggers with queue output bindings only",
            )
        queue_name, connection = _queue_binding(name, binding, settings)
        output = QueueOutput(str(binding["name"]), queue_name, connection)
        if output.param == "$return":
            return_output = output
        else:
            outputs.append(output)
    return tuple(outputs), return_output


def _queue_function(
    name: str,
    function: Callable[..., Any],
    bindings: list[dict[str, Any]],
    context_param: str | None,
    settings: Mapping[str, str],
) -> QueueFunction:
    trigger = next(b for b in bindings if b.get("type") == "queueTrigger")
    outputs, return_output = _output_bindings(name, bindings, trigger, settings)
    queue_name, connection = _queue_binding(name, trigger, settings)
    trigger_param = str(trigger["name"])
    hints = _type_hints(function)
    kind = _trigger_kind(name, trigger_param, hints.get(trigger_param, inspect.Parameter.empty))
    return QueueFunction(
        name=name,
        func=function,
        is_async=inspect.iscoroutinefunction(function),
        trigger_param=trigger_param,
        trigger_kind=kind,
        queue_name=queue_name,
        connection=connection,
        outputs=outputs,
        return_output=return_output,
        context_param=context_param,
    )


def _flag(name: str, binding: Mapping[str, Any], key: str) -> bool | None:
    value = binding.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise FunctionLoadError(name, f"{key} must be true or false, got {value!r}")


def _monitored_by_default(schedule: CronSchedule) -> bool:
    """The host's default for ``useMonitor``: true unless the schedule recurs more often
    than once a minute."""
    upcoming = schedule.occurrences(datetime.now(UTC), 4)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(upcoming)]
    return not gaps or min(gaps) >= _MONITOR_MIN_INTERVAL


def _timer_function(
    name: str,
    function: Callable[..., Any],
    bindings: list[dict[str, Any]],
    context_param: str | None,
    settings: Mapping[str, str],
) -> TimerFunction:
    """Resolve and parse a timer trigger's schedule.

    Raises:
        FunctionLoadError: the schedule does not resolve or is not an NCRONTAB expression,
            or the function has a binding devhost cannot serve.
    """
    trigger = next(b for b in bindings if b.get("type") == "timerTrigger")
    raw = trigger.get("schedule")
    if not isinstance(raw, str) or not raw.strip():
        raise FunctionLoadError(name, "the timer trigger has no schedule")
    text = resolve_expression(raw, settings, name)
    try:
        schedule = parse_schedule(text.strip())
    except ScheduleError as exc:
        raise FunctionLoadError(name, f"invalid timer schedule: {exc}") from None
    outputs, return_output = _output_bindings(name, bindings, trigger, settings)
    use_monitor = _flag(name, trigger, "useMonitor")
    return TimerFunction(
        name=name,
        func=function,
        is_async=inspect.iscoroutinefunction(function),
        trigger_param=str(trigger["name"]),
        schedule=schedule,
        run_on_startup=bool(_flag(name, trigger, "runOnStartup")),
        use_monitor=_monitored_by_default(schedule) if use_monitor is None else use_monitor,
        outputs=outputs,
        return_output=return_output,
        context_param=context_param,
    )


class _AuthLevelNoise(logging.Filter):
    """Drops the azure-functions warning that a non-HTTP app has no auth level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Auth level is not applied")


def index_app(app: func.FunctionApp, settings: Mapping[str, str]) -> IndexedApp:
    """Validate every function of ``app`` and resolve its queue- and timer-triggered ones.

    ``app.get_functions()`` is called exactly once (a second call raises in
    azure-functions). Functions with other triggers are validated and then skipped.

    Raises:
        FunctionLoadError: the app would not load in the real worker, a ``%SETTING%`` does
            not resolve, a queue name is invalid, a timer's schedule is not an NCRONTAB
            expression, or a served function has a binding devhost cannot serve.
    """
    noise = _AuthLevelNoise()
    root = logging.getLogger()
    root.addFilter(noise)
    for handler in root.handlers:
        handler.addFilter(noise)
    try:
        functions = app.get_functions()
    except ValueError as exc:
        raise FunctionLoadError("app", str(exc)) from exc
    finally:
        root.removeFilter(noise)
        for handler in root.handlers:
            handler.removeFilter(noise)

    served: list[QueueFunction] = []
    timers: list[TimerFunction] = []
    skipped: list[tuple[str, str]] = []
    for function in functions:
        name = function.get_function_name() or function.get_user_function().__name__
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        user_function = function.get_user_function()
        context_param = _validate_signature(name, user_function, bindings)
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        trigger_type = str(triggers[0].get("type")) if triggers else "none"
        if trigger_type not in _SERVED_TRIGGERS:
            skipped.append((name, f"{trigger_type} functions are not served by devhost"))
            continue
        if trigger_type == "timerTrigger":
            timers.append(_timer_function(name, user_function, bindings, context_param, settings))
            continue
        served.append(_queue_function(name, user_function, bindings, context_param, settings))
    return IndexedApp(tuple(served), tuple(skipped), tuple(timers))
