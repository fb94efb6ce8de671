"""The functional tests import ``function_app`` in this process, which checks the app's
settings as the worker does: give it the settings a deployment always has."""

from __future__ import annotations

import os

os.environ.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
os.environ.setdefault("COSMOS_ENDPOINT", "https://127.0.0.1:8081/")
