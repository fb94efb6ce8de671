"""The functional tests import ``function_app`` in this process, which checks the app's
settings as the worker does: give it the settings a deployment always has, and no
``ORDERS_QUEUE`` (its bindings are checked as an app deployed before that setting existed
indexes them: the literal ``orders``; the set case runs in a subprocess)."""

from __future__ import annotations

import os

os.environ.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
os.environ.setdefault("COSMOS_ENDPOINT", "https://127.0.0.1:8081/")
os.environ.pop("ORDERS_QUEUE", None)
