"""tradeguard's Azure Functions (Python v2 model): wiring only.

Each function decodes nothing itself: it hands the queue body to one call of
:mod:`handlers.entrypoints`, which builds the process's dependencies once, runs the
service and logs the outcome. Queue names come from app settings (``%SETTING%``).
"""

import azure.functions as func

from handlers import entrypoints

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%TRADES_QUEUE%", connection="AzureWebJobsStorage")
def on_trade(msg: func.QueueMessage) -> None:
    """FILL and TRANSFER events."""
    entrypoints.trade(msg)


@app.queue_trigger(arg_name="msg", queue_name="%MARKS_QUEUE%", connection="AzureWebJobsStorage")
def on_mark(msg: func.QueueMessage) -> None:
    """MARK and MARKS prices."""
    entrypoints.mark(msg)


@app.queue_trigger(
    arg_name="msg", queue_name="%TRADES_QUEUE%-poison", connection="AzureWebJobsStorage"
)
def on_trade_poison(msg: func.QueueMessage) -> None:
    """Bodies of the trades queue the host gave up on."""
    entrypoints.poison(msg, "trades")


@app.queue_trigger(
    arg_name="msg", queue_name="%MARKS_QUEUE%-poison", connection="AzureWebJobsStorage"
)
def on_mark_poison(msg: func.QueueMessage) -> None:
    """Bodies of the marks queue the host gave up on."""
    entrypoints.poison(msg, "marks")


@app.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
def check_stale_marks(timer: func.TimerRequest) -> None:
    """Every minute: STALE_MARK when a held symbol's mark is older than the setting."""
    entrypoints.stale_marks()
