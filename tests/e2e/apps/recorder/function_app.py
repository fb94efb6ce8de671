"""E2E test app for devhost: records every invocation; each body can steer its function.

A JSON body may hold ``sleep`` (seconds), ``fail`` ("always"), ``fail_until`` (fail while
the dequeue count is below it), ``out`` (the value for the queue output binding) and
``poison_fail`` (the poison function fails too). Records go to the file named by the
``RECORD_FILE`` setting, one JSON object a line.
"""

import asyncio
import json
import os
import threading
import time
import typing

import azure.functions as func

app = func.FunctionApp()

_lock = threading.Lock()
_running = 0


def _record(function: str, **fields: typing.Any) -> None:
    line = json.dumps({"fn": function, "t": time.time(), **fields})
    with _lock, open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _spec(body: bytes) -> dict[str, typing.Any]:
    try:
        spec = json.loads(body)
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def main(
    msg: func.QueueMessage,
    out: func.Out[typing.List[str]],  # noqa: UP006 - the converter rejects list[str]
    context: func.Context,
) -> None:
    global _running
    with _lock:
        _running += 1
        concurrent = _running
    try:
        body = msg.get_body()
        spec = _spec(body)
        _record(
            "main",
            id=msg.id,
            body=body.decode("utf-8", errors="replace"),
            dequeue_count=msg.dequeue_count,
            concurrent=concurrent,
            invocation_id=context.invocation_id,
            has_times=msg.insertion_time is not None and msg.expiration_time is not None,
        )
        time.sleep(float(spec.get("sleep", 0)))
        tries = msg.dequeue_count or 0
        if spec.get("fail") == "always" or tries < int(spec.get("fail_until", 0)):
            raise RuntimeError("told to fail")
        if "out" in spec:
            out.set(spec["out"])
        _record("main_done", id=msg.id)
    finally:
        with _lock:
            _running -= 1


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%-poison", connection="AzureWebJobsStorage")
def poison(msg: func.QueueMessage) -> None:
    body = msg.get_body()
    _record(
        "poison",
        id=msg.id,
        body=body.decode("utf-8", errors="replace"),
        dequeue_count=msg.dequeue_count,
    )
    if _spec(body).get("poison_fail"):
        raise RuntimeError("poison handler told to fail")


@app.queue_trigger(arg_name="text", queue_name="%ASYNC_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="$return", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
async def echo(text: str) -> str:
    await asyncio.sleep(0.01)
    _record("echo", text=text)
    return text.upper()


@app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", run_on_startup=False)
def hourly(timer: func.TimerRequest) -> None:
    _record("timer")
