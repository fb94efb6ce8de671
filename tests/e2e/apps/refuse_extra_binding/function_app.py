"""Refused by the worker: an output binding whose arg_name is not a parameter."""

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="alerts", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def main(msg: func.QueueMessage) -> None:
    pass
