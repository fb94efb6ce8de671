"""decode_body: the contract's Encoding paragraph (raw JSON, base64, BOM, digests)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from handlers.core.decode import BodyError, JsonNumber, body_digest, decode_body
from tests.events import as_body, load_event

BOM = b"\xef\xbb\xbf"
OBJ = b'{"a":"x","n":1}'


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def code_of(raw: bytes) -> str:
    with pytest.raises(BodyError) as info:
        decode_body(raw)
    return info.value.code


@pytest.mark.parametrize(
    "raw",
    [
        OBJ,
        b64(OBJ),
        b" \t\r\n" + OBJ,
        BOM + OBJ,
        b" \n" + BOM + b"\t " + OBJ,
        BOM + b64(OBJ),
        b"\r\n" + b64(OBJ),
        b64(OBJ) + b"\n",
        OBJ + b" \n",
        b64(BOM + OBJ),
    ],
    ids=[
        "raw",
        "base64",
        "leading-ws",
        "bom",
        "ws-bom-ws",
        "bom-base64",
        "ws-base64",
        "base64-trailing-newline",
        "raw-trailing-ws",
        "base64-of-bom-json",
    ],
)
def test_accepted_bodies_decode_to_the_object(raw: bytes) -> None:
    decoded = decode_body(raw)
    assert decoded.obj == {"a": "x", "n": JsonNumber("1", True)}


@pytest.mark.parametrize(
    "raw",
    [
        BOM + BOM + OBJ,
        b" " + BOM + b" " + BOM + OBJ,
        b"",
        b"   \n",
        b"hello world",
        b64(OBJ)[:8] + b" " + b64(OBJ)[8:],  # whitespace inside base64
        b64(OBJ)[:8] + b"\n" + b64(OBJ)[8:],
        b64(b'{"a":12}').rstrip(b"="),  # unpadded
        base64.urlsafe_b64encode(b'{"a":"\xfb\xff"}'),  # URL-safe alphabet
        b64(b"hello"),  # base64 of non-JSON
        b'{"a":"\xff"}',  # not UTF-8
        b64(b'{"a":"\xff"}'),
        b'{"a":"\xc3"}',  # truncated UTF-8 sequence
        b'{"a":1',  # truncated JSON
        OBJ + b"x",  # trailing garbage
        b'{"a":1}{"b":2}',
        b"\x0b" + OBJ,  # vertical tab is not one of SP, HT, CR, LF
        "\u00a0".encode() + OBJ,  # nor is a no-break space
        b"[1,2]",  # raw, not beginning with {: not base64 either
        b"{'a': 1}",  # Python, not JSON
    ],
    ids=[
        "two-boms",
        "two-boms-spaced",
        "empty",
        "whitespace",
        "text",
        "base64-inner-space",
        "base64-inner-newline",
        "base64-unpadded",
        "base64-urlsafe",
        "base64-non-json",
        "raw-non-utf8",
        "base64-non-utf8",
        "truncated-utf8",
        "truncated-json",
        "trailing-garbage",
        "two-objects",
        "vertical-tab",
        "nbsp",
        "raw-array",
        "single-quotes",
    ],
)
def test_malformed_bodies(raw: bytes) -> None:
    assert code_of(raw) == "MALFORMED"


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":[1,NaN]}',
    ],
)
@pytest.mark.parametrize("encode", [False, True], ids=["raw", "base64"])
def test_bare_nan_and_infinity_are_malformed(text: bytes, encode: bool) -> None:
    assert code_of(b64(text) if encode else text) == "MALFORMED"


@pytest.mark.parametrize(
    "json_text",
    [b"[1,2]", b"1", b"-2.5", b'"text"', b"null", b"true", b"[]", b"  [1]"],
)
def test_json_that_is_not_an_object_is_schema_invalid(json_text: bytes) -> None:
    assert code_of(b64(json_text)) == "SCHEMA_INVALID"


@pytest.mark.parametrize(
    "json_text",
    [
        b'{"a":1,"a":1}',
        b'{"a":1,"b":2,"a":3}',
        b'{"a":{"b":1,"b":2}}',
        b'{"a":[{"c":1},{"b":1,"b":2}]}',
        b'{"a":1,"\\u0061":2}',  # the same key, escaped
        b'{"marks":[{"symbol":"X","symbol":"Y"}]}',
    ],
)
@pytest.mark.parametrize("encode", [False, True], ids=["raw", "base64"])
def test_duplicate_key_anywhere_is_schema_invalid(json_text: bytes, encode: bool) -> None:
    assert code_of(b64(json_text) if encode else json_text) == "SCHEMA_INVALID"


@pytest.mark.parametrize("depth", [200, 5_000, 200_000])
def test_deep_nesting_is_schema_invalid_without_recursion_error(depth: int) -> None:
    arrays = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    assert code_of(arrays) == "SCHEMA_INVALID"
    assert code_of(b64(objects)) == "SCHEMA_INVALID"


def test_moderate_nesting_and_brackets_inside_strings_are_fine() -> None:
    nested = b'{"a":' * 10 + b"1" + b"}" * 10
    assert decode_body(nested).obj["a"]["a"]["a"]
    brackets = json.dumps({"s": "[[[[{{{{" * 1000 + '\\"[', "t": "]]]"}).encode()
    assert decode_body(brackets).obj["t"] == "]]]"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":{"b":1,"b":2},',  # truncated after a complete inner object
        b'{"a":{"b":1,"b":2},"c":NaN}',
        b'{"a":1,"a":2} trailing',
        b'{"a":' + b"[" * 100,  # truncated, deeply nested
    ],
    ids=["truncated", "nan-after-dup", "garbage-after-dup", "truncated-deep"],
)
def test_non_json_with_an_early_duplicate_key_is_malformed(raw: bytes) -> None:
    assert code_of(raw) == "MALFORMED"


@pytest.mark.parametrize("encode", [False, True], ids=["raw", "base64"])
def test_digest_is_sha256_of_the_bytes_as_queued(encode: bool) -> None:
    raw = as_body(load_event("fill_btcusdt_long"), base64=encode)
    expected = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert decode_body(raw).digest == expected
    assert body_digest(raw) == expected


def test_digest_differs_between_raw_and_base64_of_the_same_json() -> None:
    event = load_event("mark_btcusdt")
    raw, encoded = as_body(event, base64=False), as_body(event)
    assert decode_body(raw).obj == decode_body(encoded).obj
    assert decode_body(raw).digest != decode_body(encoded).digest
    # leading whitespace and a BOM are part of the queued text, hence of the digest
    assert decode_body(b" " + raw).digest == body_digest(b" " + raw) != body_digest(raw)


def test_digest_format() -> None:
    digest = body_digest(b"anything")
    assert digest.startswith("sha256:")
    hexpart = digest.removeprefix("sha256:")
    assert len(hexpart) == 64
    assert hexpart == hexpart.lower()
    int(hexpart, 16)


def test_numbers_keep_their_literal_text() -> None:
    raw = (
        b'{"q":0.10,"p":1E+3,"i":125,"n":-0,"big":12345678901234567890123456789012345678,"e":1e-7}'
    )
    obj = decode_body(b64(raw)).obj
    assert obj["q"] == JsonNumber("0.10", False)
    assert obj["p"].text == "1E+3"
    assert not obj["p"].is_integer
    assert obj["i"] == JsonNumber("125", True)
    assert obj["i"].is_integer
    assert obj["n"].text == "-0"
    assert obj["big"].text == "12345678901234567890123456789012345678"
    assert obj["e"].text == "1e-7"
    assert not isinstance(obj["q"], float)


def test_strings_and_literals_decode_normally() -> None:
    raw = '{"s":"é\\u00e9€","t":true,"f":false,"z":null,"l":[1,"2"]}'.encode()
    obj = decode_body(raw).obj
    assert obj["s"] == "éé€"
    assert obj["t"] is True
    assert obj["f"] is False
    assert obj["z"] is None
    assert obj["l"] == [JsonNumber("1", True), "2"]
