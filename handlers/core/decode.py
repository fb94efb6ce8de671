"""Queue body → JSON object: the contract's decoding, before any schema check.

``messageEncoding`` is ``none``, so the app decodes bodies itself: after ASCII whitespace
and at most one UTF-8 BOM, a body starting with ``{`` is raw JSON; anything else is
base64 (standard alphabet, padded, no whitespace inside) of the JSON. Numbers keep their
literal text (:class:`JsonNumber`) so decimals are never read through float.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "BodyError",
    "DecodedBody",
    "JsonNumber",
    "body_digest",
    "decode_body",
]

MAX_DEPTH = 32
_WS = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_BASE64_RE = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _is_base64(candidate: bytes) -> bool:
    """``_BASE64_RE.fullmatch`` without the regex: whole quads of the alphabet, the last
    one ending in at most two ``=``."""
    if len(candidate) % 4:
        return False
    data = candidate.rstrip(b"=")
    if len(candidate) - len(data) > 2:
        return False
    return not data.translate(None, _BASE64_ALPHABET)


class JsonNumber:
    """A JSON number kept as its literal text; ``is_integer`` when it had no ``.``/exponent."""

    __slots__ = ("is_integer", "text")

    def __init__(self, text: str, is_integer: bool) -> None:
        self.text = text
        self.is_integer = is_integer

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class BodyError(Exception):
    """The body cannot be read as a JSON object; ``code`` is MALFORMED or SCHEMA_INVALID."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedBody:
    """A decoded body: the JSON object and the digest of the text as it sat on the queue."""

    obj: dict[str, Any]
    digest: str


def body_digest(raw: bytes) -> str:
    """``sha256:`` + hex digest of the body bytes as they sit on the queue."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class _Pairs:
    """object_pairs_hook that remembers duplicate keys instead of failing at once: a
    body that is not JSON at all must be MALFORMED even when it has a duplicate early on."""

    def __init__(self) -> None:
        self.duplicate: str | None = None

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out and self.duplicate is None:
                self.duplicate = key
            out[key] = value
        return out


def _reject_constant(name: str) -> Any:
    raise BodyError("MALFORMED", f"{name} is not JSON")


class _Duplicate(Exception):
    """A duplicate key met by the fast decoder (the full decoder then decides)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


def _json_number(text: str) -> JsonNumber:
    return JsonNumber(text, False)


def _json_integer(text: str) -> JsonNumber:
    return JsonNumber(text, True)


#: Built once (``json.loads`` with hooks builds a decoder per call). It stops at the first
#: duplicate key; any failure at all sends the text through the full decoding below,
#: which alone decides between MALFORMED and SCHEMA_INVALID.
_FAST_DECODER = json.JSONDecoder(
    parse_float=_json_number,
    parse_int=_json_integer,
    parse_constant=_reject_constant,
    object_pairs_hook=_unique_pairs,
)
_scan_once: Callable[[str, int], tuple[Any, int]] = _FAST_DECODER.scan_once  # type: ignore[attr-defined]
_JSON_WS = " \t\n\r"


def _depth(text: str) -> int | None:
    """Maximum nesting of brackets outside strings, or None when they do not balance."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                return None
    return deepest if depth == 0 and not in_string else None


def _strip_prefix(raw: bytes) -> bytes:
    body = raw.lstrip(_WS)
    if body.startswith(_BOM):
        body = body[len(_BOM) :].lstrip(_WS)
    return body


def decode_body(raw: bytes) -> DecodedBody:
    """Decode a queue body into a JSON object.

    Raises:
        BodyError: ``MALFORMED`` when the body is neither JSON nor base64 of UTF-8 JSON;
            ``SCHEMA_INVALID`` when it is JSON but not an object, has a duplicate key, or
            nests deeper than :data:`MAX_DEPTH`.
    """
    digest = body_digest(raw)
    body = _strip_prefix(raw)
    if not body.startswith(b"{"):
        candidate = body.rstrip(_WS)
        if not candidate or not _is_base64(candidate):
            raise BodyError("MALFORMED", "the body is neither JSON nor base64")
        try:
            body = _strip_prefix(binascii.a2b_base64(candidate, strict_mode=True))
        except (binascii.Error, ValueError) as exc:
            raise BodyError("MALFORMED", "the body is not valid base64") from exc
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("MALFORMED", "the body is not UTF-8") from exc
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        # ``_FAST_DECODER.decode(text)`` without its two Python frames: the text starts
        # with no whitespace, and only JSON whitespace may follow the value.
        try:
            fast, end = _scan_once(text, 0)
        except Exception:  # noqa: S110 - the full decoding below classifies every failure
            pass
        else:
            if isinstance(fast, dict) and not text[end:].strip(_JSON_WS):
                return DecodedBody(obj=fast, digest=digest)
    pairs = _Pairs()
    try:
        obj = json.loads(
            text,
            parse_float=lambda s: JsonNumber(s, False),
            parse_int=lambda s: JsonNumber(s, True),
            parse_constant=_reject_constant,
            object_pairs_hook=pairs,
        )
    except BodyError:
        raise
    except RecursionError as exc:
        # Too deep for the parser: balanced brackets are (at best) deep JSON.
        if _depth(text) is not None:
            raise BodyError(
                "SCHEMA_INVALID", f"JSON nested deeper than {MAX_DEPTH} levels"
            ) from exc
        raise BodyError("MALFORMED", "the body is not JSON") from exc
    except ValueError as exc:
        raise BodyError("MALFORMED", f"the body is not JSON: {str(exc)[:80]}") from exc
    if pairs.duplicate is not None:
        raise BodyError("SCHEMA_INVALID", f"duplicate key {pairs.duplicate[:40]!r}")
    if text.count("[") + text.count("{") > MAX_DEPTH and (_depth(text) or 0) > MAX_DEPTH:
        raise BodyError("SCHEMA_INVALID", f"JSON nested deeper than {MAX_DEPTH} levels")
    if not isinstance(obj, dict):
        raise BodyError("SCHEMA_INVALID", "the JSON value is not an object")
    return DecodedBody(obj=obj, digest=digest)
