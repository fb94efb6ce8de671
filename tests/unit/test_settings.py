"""Settings read by the app (handlers.settings): the marks fan-out ones."""

from __future__ import annotations

import pytest

from handlers.errors import ConfigurationError
from handlers.settings import fanout_queue_expression, load_settings


def test_the_fanout_queue_defaults_to_the_marks_queue_with_a_suffix() -> None:
    assert load_settings({}).marks_fanout_queue == "marks-fanout"
    assert load_settings({"MARKS_QUEUE": "mk-1"}).marks_fanout_queue == "mk-1-fanout"
    named = {"MARKS_QUEUE": "mk-1", "MARKS_FANOUT_QUEUE": "shared-fanout"}
    assert load_settings(named).marks_fanout_queue == "shared-fanout"


def test_the_fanout_trigger_names_a_setting_that_is_always_there() -> None:
    assert fanout_queue_expression({}) == "%MARKS_QUEUE%-fanout"
    assert fanout_queue_expression({"MARKS_FANOUT_QUEUE": " "}) == "%MARKS_QUEUE%-fanout"
    assert fanout_queue_expression({"MARKS_FANOUT_QUEUE": "f"}) == "%MARKS_FANOUT_QUEUE%"


def test_the_fanout_batch_is_bounded() -> None:
    assert load_settings({}).marks_fanout_batch == 200
    assert load_settings({"MARKS_FANOUT_BATCH": "5000"}).marks_fanout_batch == 5000
    for bad in ("0", "5001", "-1", "1.5", "many"):
        with pytest.raises(ConfigurationError, match="MARKS_FANOUT_BATCH"):
            load_settings({"MARKS_FANOUT_BATCH": bad})
