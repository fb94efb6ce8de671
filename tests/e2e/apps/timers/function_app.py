"""E2E test app for devhost's timer triggers: each tick is recorded (start and end time,
``past_due``, ``schedule_status``, ``schedule``) in the file named by ``RECORD_FILE``.

``tick`` runs on ``%TICK_SCHEDULE%``, sleeps ``TICK_SLEEP`` seconds and writes one message
to ``OUT_QUEUE``; ``yearly`` runs on start-up; ``minutely`` is monitored (its schedule
status is kept across runs).
"""

import json
import os
import threading
import time
import typing

import azure.functions as func

app = func.FunctionApp()

_lock = threading.Lock()


def _record(function: str, timer: func.TimerRequest, **fields: typing.Any) -> None:
    line = json.dumps(
        {
            "fn": function,
            "t": time.time(),
            "past_due": timer.past_due,
            "status": getattr(timer, "schedule_status", None),
            "schedule": getattr(timer, "schedule", None),
            **fields,
        }
    )
    with _lock, open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%")
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def tick(timer: func.TimerRequest, out: func.Out[str], context: func.Context) -> None:
    start = time.time()
    time.sleep(float(os.environ.get("TICK_SLEEP", "0")))
    out.set(json.dumps({"tick": start}))
    _record("tick", timer, start=start, end=time.time(), invocation_id=context.invocation_id)


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
async def yearly(timer: func.TimerRequest) -> None:
    _record("yearly", timer)


@app.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
def minutely(timer: func.TimerRequest) -> None:
    _record("minutely", timer)
