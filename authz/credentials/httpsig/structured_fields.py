"""The subset of RFC 8941 Structured Field Values that HTTP Message Signatures use.

`Signature-Input` is a Dictionary of Inner Lists with Parameters, `Signature` and
`Content-Digest` are Dictionaries of Byte Sequences. The parser is strict where RFC 8941 is
lenient in ways an attacker could use: a Dictionary naming the same key twice is refused
(RFC 8941 would keep the last one, so two proxies could read two different signatures),
and every Dictionary and Inner List is bounded in size. `serialize_inner_list` gives the
canonical form RFC 9421 signs as `@signature-params`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

MAX_DICTIONARY_MEMBERS = 16
MAX_INNER_LIST_ITEMS = 32
MAX_PARAMETERS = 16


class StructuredFieldError(ValueError):
    """The field value is not a valid (or not an acceptably small) structured field."""


@dataclass(frozen=True, slots=True)
class Token:
    """An RFC 8941 Token (unquoted), kept apart from a String of the same text."""

    value: str


BareItem = int | Decimal | str | Token | bytes | bool
Parameters = Mapping[str, BareItem]


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem
    params: Parameters


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: Parameters


Member = Item | InnerList

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_INTEGER_OR_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class _Parser:
    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise StructuredFieldError("structured fields are ASCII")
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, characters: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in characters:
            self.pos += 1

    def expect(self, character: str) -> None:
        if self.peek() != character:
            raise StructuredFieldError(f"expected {character!r} at offset {self.pos}")
        self.pos += 1

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        found = pattern.match(self.text, self.pos)
        if found is None or not found.group():
            raise StructuredFieldError(f"expected {what} at offset {self.pos}")
        self.pos = found.end()
        return found.group()

    def key(self) -> str:
        return self.match(_KEY, "a key")

    def bare_item(self) -> BareItem:
        first = self.peek()
        if first == '"':
            return self.string()
        if first == ":":
            return self.byte_sequence()
        if first == "?":
            self.pos += 1
            value = self.peek()
            if value not in ("0", "1"):
                raise StructuredFieldError("a boolean is ?0 or ?1")
            self.pos += 1
            return value == "1"
        if first == "-" or first.isdigit():
            return self.number()
        if first.isalpha() or first == "*":
            return Token(self.match(_TOKEN, "a token"))
        raise StructuredFieldError(f"unexpected {first!r} at offset {self.pos}")

    def number(self) -> int | Decimal:
        text = self.match(_INTEGER_OR_DECIMAL, "a number")
        digits = text.lstrip("-")
        if "." in digits:
            whole, fraction = digits.split(".")
            if len(whole) > 12 or len(fraction) > 3:
                raise StructuredFieldError("decimal out of range")
            return Decimal(text)
        if len(digits) > 15:
            raise StructuredFieldError("integer out of range")
        return int(text)

    def string(self) -> str:
        self.expect('"')
        chars: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise StructuredFieldError("unterminated string")
            self.pos += 1
            if char == '"':
                return "".join(chars)
            if char == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    raise StructuredFieldError("invalid escape in string")
                self.pos += 1
                chars.append(escaped)
            elif " " <= char <= "~":
                chars.append(char)
            else:
                raise StructuredFieldError("control character in string")

    def byte_sequence(self) -> bytes:
        self.expect(":")
        encoded = self.match(_BASE64, "base64") if self.peek() != ":" else ""
        self.expect(":")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise StructuredFieldError("invalid base64 in byte sequence") from None

    def parameters(self) -> dict[str, BareItem]:
        params: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            key = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            if key in params:
                raise StructuredFieldError(f"parameter {key!r} appears twice")
            params[key] = value
            if len(params) > MAX_PARAMETERS:
                raise StructuredFieldError("too many parameters")
        return params

    def item(self) -> Item:
        value = self.bare_item()
        return Item(value, self.parameters())

    def inner_list(self) -> InnerList:
        self.expect("(")
        items: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self.parameters())
            items.append(self.item())
            if len(items) > MAX_INNER_LIST_ITEMS:
                raise StructuredFieldError("too many items in an inner list")
            if self.peek() not in (" ", ")"):
                raise StructuredFieldError(f"expected ' ' or ')' at offset {self.pos}")

    def member_value(self) -> Member:
        return self.inner_list() if self.peek() == "(" else self.item()

    def dictionary(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        self.skip(" ")
        while self.pos < len(self.text):
            key = self.key()
            member: Member
            if self.peek() == "=":
                self.pos += 1
                member = self.member_value()
            else:
                member = Item(True, self.parameters())
            if key in members:
                raise StructuredFieldError(f"dictionary key {key!r} appears twice")
            members[key] = member
            if len(members) > MAX_DICTIONARY_MEMBERS:
                raise StructuredFieldError("too many dictionary members")
            self.skip(" \t")
            if self.pos == len(self.text):
                break
            self.expect(",")
            self.skip(" \t")
            if self.pos == len(self.text):
                raise StructuredFieldError("trailing comma")
        return members


def parse_dictionary(text: str) -> dict[str, Member]:
    """Parse a Dictionary field value (leading and trailing spaces ignored)."""
    parser = _Parser(text.strip(" "))
    return parser.dictionary()


def parse_item(text: str) -> Item:
    """Parse an Item (a component identifier such as `"@method";req`)."""
    parser = _Parser(text.strip(" "))
    item = parser.item()
    if parser.pos != len(parser.text):
        raise StructuredFieldError("trailing characters after an item")
    return item


def serialize_bare_item(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        text = f"{value.quantize(Decimal('0.001')):f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, Token):
        return value.value
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_parameters(params: Parameters) -> str:
    return "".join(
        f";{key}" if value is True else f";{key}={serialize_bare_item(value)}"
        for key, value in params.items()
    )


def serialize_item(item: Item) -> str:
    return serialize_bare_item(item.value) + serialize_parameters(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    """The canonical serialization: what RFC 9421 signs as `@signature-params`."""
    items = " ".join(serialize_item(item) for item in inner.items)
    return f"({items}){serialize_parameters(inner.params)}"
