"""The file digests an OPA bundle signature lists, computed exactly as OPA computes them.

OPA (`v1/bundle/verify.go`, `hash.go`) hashes most files as their raw bytes. A file whose
base name is `data.json`, `data.yaml`, `.manifest` or `signatures.json` is hashed over a
normal form instead, so that whitespace and member order do not change its digest: the
document is parsed (as JSON when it is valid JSON, else as YAML converted to JSON, after
dropping a UTF-8 byte order mark), then written with object members sorted by key, no
whitespace, every number exactly as written in the source, and strings escaped as Go's
`encoding/json` escapes them with HTML escaping off. `data.yml` is not in OPA's list, so
OPA hashes it as raw bytes, and so does this module.

The YAML path matches OPA for plain YAML (maps with string keys, lists, strings, integers,
floats, booleans, null); YAML that only OPA's Go libraries interpret (timestamps, binary,
non-string keys) is refused rather than hashed differently. Signed bundles built with
`opa build` hold a single `data.json`, so this only concerns hand-made bundles.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePosixPath

import yaml

from authz.strict_json import reject_constant

HASH_ALGORITHMS: Mapping[str, str] = {
    "SHA-224": "sha224",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
    "SHA-512-224": "sha512_224",
    "SHA-512-256": "sha512_256",
}
"""OPA's names for the file hash algorithms accepted here → hashlib names."""

WEAK_HASH_ALGORITHMS = frozenset({"MD5", "SHA-1"})
"""Algorithms OPA also accepts but this gateway refuses: collisions are practical for both,
so a signed digest would not pin the file's content."""

DEFAULT_HASH_ALGORITHM = "SHA-256"

STRUCTURED_NAMES = frozenset({"data.json", "data.yaml", ".manifest", "signatures.json"})

_BOM = b"\xef\xbb\xbf"
# Go's encoder escapes these short-form; other controls as \u00XX; U+2028/9 always (Go's
# json escapes them even with HTML escaping off, for JSONP safety).
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\\u2028\u2029]')
_SURROGATE = re.compile("[\ud800-\udfff]")


class DigestError(ValueError):
    """A file whose digest cannot be computed as OPA would; the message says why."""


class _Number(str):
    """A JSON number kept as its source text: OPA decodes with `UseNumber` and writes the
    literal back, so `1.50` and `1.5` hash differently."""

    __slots__ = ()


def is_structured(path: str) -> bool:
    """Whether OPA hashes this bundle file over its normal form rather than its bytes."""
    return PurePosixPath(path).name in STRUCTURED_NAMES


def hash_algorithm(name: str) -> str:
    """The hashlib name for an OPA hash algorithm name, or DigestError (weak or unknown)."""
    if name in WEAK_HASH_ALGORITHMS:
        raise DigestError(f"hash algorithm {name} is too weak; sign with SHA-256 or stronger")
    try:
        return HASH_ALGORITHMS[name]
    except KeyError:
        raise DigestError(f"unsupported hash algorithm {name!r}") from None


def signed_bytes(path: str, content: bytes) -> bytes:
    """The bytes OPA feeds to the hash for the bundle file `path` holding `content`."""
    if not is_structured(path):
        return content
    return normal_form(content).encode("utf-8")


def file_digest(path: str, content: bytes, algorithm: str = DEFAULT_HASH_ALGORITHM) -> bytes:
    """The digest OPA computes for this file with `algorithm` (an OPA name: `SHA-256`)."""
    return hashlib.new(hash_algorithm(algorithm), signed_bytes(path, content)).digest()


def normal_form(content: bytes) -> str:
    """A structured file's normal form: sorted members, no whitespace, literal numbers."""
    if content.startswith(_BOM):
        content = content[len(_BOM) :]
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise DigestError("not UTF-8 text") from None
    parts: list[str] = []
    try:
        try:
            document = json.loads(
                text, parse_int=_Number, parse_float=_Number, parse_constant=reject_constant
            )
        except ValueError:
            document = _load_yaml(text)
        _write(document, parts)
    except RecursionError:
        raise DigestError("nested too deeply") from None
    # Go decodes an unpaired surrogate escape to U+FFFD and writes that character as is.
    return _SURROGATE.sub("\ufffd", "".join(parts))


def _load_yaml(text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DigestError(f"neither JSON nor YAML: {exc}") from None


def _write(value: object, parts: list[str]) -> None:
    if isinstance(value, dict):
        members = {_key(key): item for key, item in value.items()}
        parts.append("{")
        for index, key in enumerate(sorted(members)):
            if index:
                parts.append(",")
            parts.append(_go_string(key))
            parts.append(":")
            _write(members[key], parts)
        parts.append("}")
    elif isinstance(value, list):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    elif isinstance(value, _Number):
        parts.append(value)
    elif isinstance(value, str):
        parts.append(_go_string(value))
    elif value is None:
        parts.append("null")
    elif isinstance(value, bool):
        parts.append("true" if value else "false")
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, float):
        parts.append(_go_float(value))
    else:
        raise DigestError(f"YAML value of type {type(value).__name__} has no JSON form")


def _key(key: object) -> str:
    # YAML keys become JSON member names the way sigs.k8s.io/yaml converts them.
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    raise DigestError(f"YAML key of type {type(key).__name__} has no JSON form")


def _go_string(value: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"

    return '"' + _NEEDS_ESCAPE.sub(escape, value) + '"'


def _go_float(value: float) -> str:
    """A float64 as Go's `json.Marshal` writes it (YAML floats reach OPA's hash that way)."""
    if not math.isfinite(value):
        raise DigestError("YAML .inf or .nan has no JSON form")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    shortest = Decimal(repr(value))
    if 1e-6 <= abs(value) < 1e21:
        text = format(shortest, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    sign, digits, exponent = shortest.normalize().as_tuple()
    assert isinstance(exponent, int)  # finite
    mantissa = "".join(map(str, digits))
    power = exponent + len(mantissa) - 1
    fraction = "." + mantissa[1:] if len(mantissa) > 1 else ""
    # Go writes at least two exponent digits, then trims e-07 to e-7 (but keeps e+21).
    written = f"{'-' if sign else ''}{mantissa[0]}{fraction}e{'-' if power < 0 else '+'}"
    return written + (str(-power) if power < 0 else f"{power:02d}")
