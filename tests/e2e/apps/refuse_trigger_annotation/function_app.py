"""Refused by the worker: a queue trigger parameter annotated ``int``."""

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
def main(msg: int) -> None:
    pass
