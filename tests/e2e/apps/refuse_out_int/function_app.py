"""Refused by the worker: a queue output annotated ``func.Out[int]``."""

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def main(msg: func.QueueMessage, out: func.Out[int]) -> None:
    out.set(1)
