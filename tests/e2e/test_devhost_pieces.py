"""devhost's pure pieces: host.json options, output stamping, base64, settings files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devhost.host import decode_base64_body, stamp_parent_id
from devhost.hostjson import HostJsonError, load_queues_options, queues_options_from_dict
from devhost.settings_file import SettingsError, load_settings


def test_host_json_defaults_follow_the_queues_extension() -> None:
    options = queues_options_from_dict({}, processor_count=2)

    assert options.batch_size == 16
    assert options.new_batch_threshold == 16  # batchSize / 2 * processor count
    assert options.parallelism == 32
    assert options.max_polling_interval == 60
    assert options.visibility_timeout == 0
    assert options.max_dequeue_count == 5
    assert options.message_encoding == "base64"


def test_host_json_values_timespans_and_milliseconds(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {
                    "queues": {
                        "BatchSize": 3,
                        "newBatchThreshold": 0,
                        "maxPollingInterval": 2500,
                        "visibilityTimeout": "00:01:30.5",
                        "maxDequeueCount": 2,
                        "messageEncoding": "None",
                    }
                },
            }
        )
    )

    options = load_queues_options(tmp_path, processor_count=4)

    assert (options.batch_size, options.new_batch_threshold, options.parallelism) == (3, 0, 3)
    assert options.max_polling_interval == 2.5
    assert options.visibility_timeout == 90.5
    assert (options.max_dequeue_count, options.message_encoding) == (2, "none")
    assert queues_options_from_dict({"batchSize": 1}, 1).new_batch_threshold == 0


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"batchSize": 0}, "batchSize must be 1..32"),
        ({"maxPollingInterval": "00:00:00.050"}, "at least 100 ms"),
        ({"maxPollingInterval": "soon"}, "is not a TimeSpan"),
        ({"maxDequeueCount": 0}, "maxDequeueCount must be >= 1"),
        ({"messageEncoding": "utf8"}, "messageEncoding must be 'base64' or 'none'"),
    ],
)
def test_host_json_refuses_what_the_host_refuses(section: dict[str, object], error: str) -> None:
    with pytest.raises(HostJsonError, match=error):
        queues_options_from_dict(section, processor_count=1)


def test_parent_id_is_stamped_into_json_objects_only() -> None:
    assert stamp_parent_id('{"a": 1}', "id-1") == '{"a": 1,"$AzureWebJobsParentId":"id-1"}'
    assert stamp_parent_id(" {} \n", "id-1") == ' {"$AzureWebJobsParentId":"id-1"} \n'
    assert json.loads(stamp_parent_id('{"$AzureWebJobsParentId": "old"}', "new")) == {
        "$AzureWebJobsParentId": "new"
    }
    for body in ("[1]", "text", '"{"', "{broken", "eyJhIjoxfQ=="):
        assert stamp_parent_id(body, "id-1") == body


def test_base64_bodies_decode_like_the_host() -> None:
    assert decode_base64_body("aGVsbG8=") == b"hello"
    assert decode_base64_body("aGVs\r\nbG8=") == b"hello"  # .NET ignores whitespace
    for bad in ("hello!", "aGVsbG8", '{"a":1}', "héllo"):
        with pytest.raises(ValueError, match="base64"):
            decode_base64_body(bad)


def test_settings_file_under_the_environment(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"Values": {"A": "file", "B": "file", "N": 5, "T": True}})
    )

    merged = load_settings(tmp_path, environ={"A": "env"})

    assert merged == {"A": "env", "B": "file", "N": "5", "T": "true"}
    assert load_settings(tmp_path / "nowhere", environ={"A": "env"}) == {"A": "env"}
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path, tmp_path / "missing.json", environ={})
    (tmp_path / "enc.json").write_text(json.dumps({"IsEncrypted": True, "Values": {}}))
    with pytest.raises(SettingsError, match="encrypted"):
        load_settings(tmp_path, tmp_path / "enc.json", environ={})
