"""Refused by the worker: a Python parameter that no binding names."""

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
def main(msg: func.QueueMessage, extra: str) -> None:
    pass
