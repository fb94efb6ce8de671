"""tradeguard's Azure Functions (Python v2 model): wiring only.

The functions are ``async def``: the worker runs them on its event loop, where the asyncio
SDK clients (one per process) serve them all. Each function decodes nothing itself: it
hands the queue body to one call of :mod:`handlers.entrypoints`, which builds the
process's dependencies once, runs its flow and logs the outcome. Queue names come from app
settings (``%SETTING%``); the marks fan-out queue's defaults to ``%MARKS_QUEUE%-fanout``
when ``MARKS_FANOUT_QUEUE`` is not set (:func:`handlers.settings.fanout_queue_expression`),
and the orders queue's to the literal ``orders`` when ``ORDERS_QUEUE`` is not set
(:func:`handlers.settings.orders_queue_expression`: apps deployed before orders existed do
not set it, and the host refuses a ``%SETTING%`` that is missing).
"""

import azure.functions as func

from handlers import entrypoints
from handlers.settings import fanout_queue_expression, orders_queue_expression

app = func.FunctionApp()
entrypoints.check_configuration()  # a setting or catalog it cannot use stops it loading


@app.queue_trigger(arg_name="msg", queue_name="%TRADES_QUEUE%", connection="AzureWebJobsStorage")
async def on_trade(msg: func.QueueMessage, context: func.Context) -> None:
    """FILL and TRANSFER events."""
    await entrypoints.trade(msg, context)


@app.queue_trigger(arg_name="msg", queue_name="%MARKS_QUEUE%", connection="AzureWebJobsStorage")
async def on_mark(msg: func.QueueMessage, context: func.Context) -> None:
    """MARK and MARKS prices."""
    await entrypoints.mark(msg, context)


@app.queue_trigger(
    arg_name="msg", queue_name=fanout_queue_expression(), connection="AzureWebJobsStorage"
)
async def on_mark_fanout(msg: func.QueueMessage, context: func.Context) -> None:
    """Units of a mark's pass over many holders (the app's own fan-out queue)."""
    await entrypoints.mark_fanout(msg, context)


@app.queue_trigger(
    arg_name="msg", queue_name=orders_queue_expression(), connection="AzureWebJobsStorage"
)
async def on_order(msg: func.QueueMessage, context: func.Context) -> None:
    """ORDER pre-trade checks, ORDER_DONE and ACCOUNT_CONTROL."""
    await entrypoints.order(msg, context)


@app.queue_trigger(
    arg_name="msg", queue_name="%TRADES_QUEUE%-poison", connection="AzureWebJobsStorage"
)
async def on_trade_poison(msg: func.QueueMessage, context: func.Context) -> None:
    """Bodies of the trades queue the host gave up on."""
    await entrypoints.poison(msg, "trades", context)


@app.queue_trigger(
    arg_name="msg", queue_name="%MARKS_QUEUE%-poison", connection="AzureWebJobsStorage"
)
async def on_mark_poison(msg: func.QueueMessage, context: func.Context) -> None:
    """Bodies of the marks queue the host gave up on."""
    await entrypoints.poison(msg, "marks", context)


@app.queue_trigger(
    arg_name="msg",
    queue_name=fanout_queue_expression() + "-poison",
    connection="AzureWebJobsStorage",
)
async def on_mark_fanout_poison(msg: func.QueueMessage, context: func.Context) -> None:
    """Units of the marks fan-out the host gave up on."""
    await entrypoints.poison(msg, "marks-fanout", context)


@app.queue_trigger(
    arg_name="msg",
    queue_name=orders_queue_expression() + "-poison",
    connection="AzureWebJobsStorage",
)
async def on_order_poison(msg: func.QueueMessage, context: func.Context) -> None:
    """Bodies of the orders queue the host gave up on."""
    await entrypoints.poison(msg, "orders", context)


@app.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
async def check_stale_marks(timer: func.TimerRequest, context: func.Context) -> None:
    """Every minute: STALE_MARK when a held symbol's mark is older than the setting."""
    await entrypoints.stale_marks(context)
