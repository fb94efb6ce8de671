"""Bindings: from a received storage message to a function's arguments, and from its
outputs back to queue messages.

- the trigger parameter gets an ``azure.functions.QueueMessage`` with the trigger metadata
  (or the body as ``str`` / ``bytes``), ``context`` a ``func.Context``, each queue output
  an ``Out``;
- bodies are decoded per ``messageEncoding`` (``base64`` the way .NET's
  ``FromBase64String`` reads it, ``none`` as UTF-8 text);
- queue output bindings and ``$return`` are written after the function returns: a string
  is one message, a list one message per element, JSON-object bodies get
  ``$AzureWebJobsParentId`` and every body is encoded per ``messageEncoding``;
- a function that returns a value without a ``$return`` binding fails, as in the worker;
- a timer function gets the ``azure.functions.TimerRequest`` the timer listener built.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor
from typing import Any

import azure.functions as func
from azure.functions import _abc as azf_abc
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueMessage as StorageMessage

from devhost.indexing import QueueFunction, QueueOutput, TimerFunction

__all__ = [
    "PARENT_ID_FIELD",
    "UndecodableBody",
    "decode_base64_body",
    "decode_body",
    "encode_output",
    "invoke",
    "invoke_timer",
    "output_bodies",
    "stamp_parent_id",
    "write_outputs",
]

PARENT_ID_FIELD = "$AzureWebJobsParentId"
_WHITESPACE = b" \t\r\n"
#: azure.functions.queue.QueueMessage (untyped in azure-functions) with all trigger metadata.
_QUEUE_MESSAGE: Any = FunctionQueueMessage
#: The trigger metadata a queue message carries into the function (QueueMessage keyword →
#: the storage message's attribute), as the worker passes it.
_TRIGGER_METADATA = {
    "id": "id",
    "dequeue_count": "dequeue_count",
    "pop_receipt": "pop_receipt",
    "insertion_time": "inserted_on",
    "expiration_time": "expires_on",
    "time_next_visible": "next_visible_on",
}

#: Sends one message body (already encoded) to a queue: (connection, queue name, content).
Send = Callable[[str, str, str], Awaitable[None]]


class _Out(func.Out[Any]):
    """The value of an output binding parameter, as the worker's ``Out`` holds it."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(azf_abc.TraceContext):
    def __init__(self, invocation_id: str) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{invocation_id.replace('-', '')[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> Any:
        return None


class _Context(func.Context):
    """The ``context`` argument: invocation id, function name and directory."""

    _thread_local = threading.local

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = _TraceContext(invocation_id)
        self._retry_context = _RetryContext(0, 0)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return self._retry_context


# --------------------------------------------------------------------------- bodies


def decode_base64_body(text: str) -> bytes:
    """Decode a queue body the way the host's base64 decoding does (.NET ``FromBase64String``:
    ASCII whitespace is ignored, the rest must be padded standard base64).

    Raises:
        ValueError: the text is not valid base64.
    """
    data = text.encode("ascii", errors="strict") if text.isascii() else None
    if data is None:
        raise ValueError("body is not ASCII, so not base64")
    compact = data.translate(None, _WHITESPACE)
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"body is not valid base64: {exc}") from exc


class UndecodableBody(ValueError):
    """A body that ``messageEncoding`` cannot decode: with ``base64``, text that is not."""


def decode_body(raw: str, message_encoding: str) -> bytes:
    """The body a function sees of a message whose text on the queue is ``raw``.

    Raises:
        UndecodableBody: ``message_encoding`` is ``base64`` and the text is not valid
            base64 (the message is not invoked).
    """
    if message_encoding == "base64":
        try:
            return decode_base64_body(raw)
        except ValueError as exc:
            raise UndecodableBody(str(exc)) from exc
    return raw.encode("utf-8")


def stamp_parent_id(text: str, invocation_id: str) -> str:
    """Add ``"$AzureWebJobsParentId": invocation_id`` to a body that is a JSON object.

    Any other body is returned unchanged. The rest of the body's text is kept as written
    (the property is inserted before the closing brace); a body that already has the
    property at the top level is re-serialised with the new value.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        return text
    try:
        document = json.loads(stripped)
    except ValueError:
        return text
    if not isinstance(document, dict):
        return text
    if PARENT_ID_FIELD in document:
        document[PARENT_ID_FIELD] = invocation_id
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    end = text.rindex("}")
    member = json.dumps(PARENT_ID_FIELD) + ":" + json.dumps(invocation_id)
    separator = "," if document else ""
    return text[:end] + separator + member + text[end:]


def encode_output(item: bytes | str, invocation_id: str, message_encoding: str) -> str:
    """An output body as the host writes it: parent id stamped, then encoded."""
    text = item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
    text = stamp_parent_id(text, invocation_id)
    if message_encoding == "base64":
        return base64.b64encode(text.encode("utf-8")).decode("ascii")
    return text


def output_bodies(param: str, value: Any) -> list[bytes | str]:
    """Turn an output binding's value into message bodies (one per list element).

    Raises:
        TypeError: the value is not str, bytes, a QueueMessage or an iterable of those.
    """
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, azf_abc.QueueMessage):
        return [value.get_body()]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        bodies: list[bytes | str] = []
        for item in value:
            if isinstance(item, str | bytes):
                bodies.append(item)
            elif isinstance(item, azf_abc.QueueMessage):
                bodies.append(item.get_body())
            else:
                raise TypeError(
                    f"invalid data type in output queue message list {param!r}: "
                    f"{type(item).__name__}"
                )
        return bodies
    raise TypeError(f"invalid value for queue output {param!r}: {type(value).__name__}")


# --------------------------------------------------------------------------- invocation


def _check_return(function: QueueFunction | TimerFunction, result: Any) -> None:
    """The worker's rule: a function without a ``$return`` binding must return None.

    Raises:
        RuntimeError: it returned something else (the invocation fails, as in Azure).
    """
    if result is not None and function.return_output is None:
        raise RuntimeError(
            f"function {function.name!r} without a $return binding returned a non-None value"
        )


async def _call(
    function: QueueFunction | TimerFunction,
    arguments: dict[str, Any],
    invocation_id: str,
    function_directory: str,
    executor: Executor,
) -> list[tuple[QueueOutput, Any]]:
    """Add ``context`` and the ``Out`` parameters to ``arguments``, call the function (a
    sync one in ``executor``, an ``async def`` one on the running loop) and return each
    queue output binding (``$return`` last) with the value the function gave it."""
    outs = {output.param: _Out() for output in function.outputs}
    arguments.update(outs)
    if function.context_param:
        arguments[function.context_param] = _Context(
            invocation_id, function.name, function_directory
        )
    if function.is_async:
        result = await function.func(**arguments)
    else:
        context = contextvars.copy_context()
        call = functools.partial(context.run, function.func, **arguments)
        result = await asyncio.get_running_loop().run_in_executor(executor, call)
    _check_return(function, result)
    produced: list[tuple[QueueOutput, Any]] = [
        (output, outs[output.param].get()) for output in function.outputs
    ]
    if function.return_output is not None:
        produced.append((function.return_output, result))
    return produced


async def invoke(
    function: QueueFunction,
    message: StorageMessage,
    body: bytes,
    invocation_id: str,
    *,
    function_directory: str,
    executor: Executor,
) -> list[tuple[QueueOutput, Any]]:
    """Call ``function`` with its arguments built from ``message`` (whose decoded body is
    ``body``): a sync function in ``executor``, an ``async def`` one on the running loop.

    Returns each queue output binding (``$return`` last) with the value the function gave
    it (``None`` when it set nothing).

    Raises:
        RuntimeError: the function returned a value but has no ``$return`` binding.
        Exception: whatever the function raises.
    """
    arguments: dict[str, Any] = {}
    if function.trigger_kind == "str":
        arguments[function.trigger_param] = body.decode("utf-8", errors="replace")
    elif function.trigger_kind == "bytes":
        arguments[function.trigger_param] = body
    else:
        metadata = {name: getattr(message, field) for name, field in _TRIGGER_METADATA.items()}
        arguments[function.trigger_param] = _QUEUE_MESSAGE(body=body, **metadata)
    return await _call(function, arguments, invocation_id, function_directory, executor)


async def invoke_timer(
    function: TimerFunction,
    request: func.TimerRequest,
    invocation_id: str,
    *,
    function_directory: str,
    executor: Executor,
) -> list[tuple[QueueOutput, Any]]:
    """Call a timer function with ``request`` as its trigger argument; as :func:`invoke`.

    Raises:
        RuntimeError: the function returned a value but has no ``$return`` binding.
        Exception: whatever the function raises.
    """
    arguments: dict[str, Any] = {function.trigger_param: request}
    return await _call(function, arguments, invocation_id, function_directory, executor)


async def write_outputs(
    outputs: list[tuple[QueueOutput, Any]],
    invocation_id: str,
    message_encoding: str,
    send: Send,
) -> None:
    """Write the values :func:`invoke` returned to their queues, in order, one message per
    string (per element of a list).

    Raises:
        TypeError: a value is not one a queue output binding takes (see
            :func:`output_bodies`); the messages before it have been sent.
        Exception: whatever ``send`` raises.
    """
    for output, value in outputs:
        for item in output_bodies(output.param, value):
            await send(
                output.connection,
                output.queue_name,
                encode_output(item, invocation_id, message_encoding),
            )
