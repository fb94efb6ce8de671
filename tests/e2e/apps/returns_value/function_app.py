"""E2E test app: a queue-triggered function that returns a value without a ``$return``
binding. The Python worker fails such an invocation (RuntimeError), so the host retries it
and then poisons the message."""

import json
import os

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
def main(msg: func.QueueMessage):  # no return annotation: the worker checks none here
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"fn": "main", "dequeue_count": msg.dequeue_count}) + "\n")
    return "a value nobody binds"
