"""Reading a recipe: its file's bytes as TOML text, and `--set` overrides applied to it.

A recipe file is untrusted input: a file in another encoding, arrays nested a thousand deep,
a number of five thousand digits or a binary file each give a `RecipeError` naming the file
and, where known, the line and column — never a `UnicodeDecodeError` or a `RecursionError`.
An override's problems name the override (`--set KEY=VALUE`). Validation is `recipe`'s job.
"""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path
from typing import Any

from pipeforge.errors import Problem, RecipeError, shorten

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# A recipe nests a few levels (dataset.transforms[1].size[0] is 5); far deeper is a mistake or
# an attack, and Python's TOML and pydantic code recurse once per level.
MAX_DEPTH = 32
TOO_DEEP = f"arrays or tables nested too deeply (a recipe nests at most {MAX_DEPTH} levels)"
# A recipe file is a few KB; reading stops here (e.g. when given /dev/zero).
MAX_BYTES = 16 * 2**20
NEWLINE = "\n"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a recipe file. A file that cannot be read, is not UTF-8 text (a UTF-8 byte-order
    mark is fine) or is not valid TOML is a `RecipeError` naming the file and, where known,
    the line and column."""
    text = read_text(path)
    try:
        return parse_toml(text)
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None


def read_text(path: Path) -> str:
    """A recipe file's text (see `decode`); a file that cannot be read, is larger than
    `MAX_BYTES` or is not UTF-8 is a `RecipeError` naming the file."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL in it
        raise RecipeError([Problem("", f"cannot read recipe: {getattr(exc, 'strerror', None) or exc}")], str(path)) from None
    if len(raw) > MAX_BYTES:
        raise RecipeError([Problem("", f"larger than {MAX_BYTES // 2**20} MB: not a recipe")], str(path))
    try:
        return decode(raw)
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None


def decode(raw: bytes) -> str:
    """A recipe file's bytes as text: UTF-8, as TOML requires, with or without a byte-order
    mark (editors write one). Anything else is a `RecipeError` saying where it stops being
    UTF-8 and what the file looks like instead."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    for bom, name in _OTHER_BOMS:
        if raw.startswith(bom):
            raise RecipeError([Problem("line 1, column 1", f"the file is {name} text, not UTF-8", _SAVE_AS_UTF8)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = _line_column(raw, exc.start)
        raise RecipeError([Problem(where, f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", _SAVE_AS_UTF8)]) from None
    if "\0" in text:  # valid UTF-8, but no text file holds NUL: UTF-16 without a BOM, or binary
        where = _line_column(raw, raw.index(b"\0"))
        raise RecipeError([Problem(where, "not UTF-8 text (a NUL byte: binary, or UTF-16/32)", _SAVE_AS_UTF8)])
    return text


# UTF-32's marks first: UTF-32-LE's starts with UTF-16-LE's.
_OTHER_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
               (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_SAVE_AS_UTF8 = "a recipe is UTF-8 text: save it with the UTF-8 encoding"


def _line_column(raw: bytes, offset: int) -> str:
    line, column = raw.count(b"\n", 0, offset) + 1, offset - raw.rfind(b"\n", 0, offset)
    return f"line {line}, column {column}"


def parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error, a number Python cannot read, or nesting deeper than
    the parser can follow is a `RecipeError` (with the line and column where TOML gives one)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.fullmatch(r"(.*) \(at (line \d+, column \d+|end of document)\)", str(exc), re.DOTALL)
        message, where = (found.group(1), found.group(2)) if found else (str(exc), "")
        raise RecipeError([Problem(where, f"not valid TOML: {message}")]) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits, which Python won't read
        long_number = re.search(r"[0-9_]{4000,}", text)
        where = f"line {text.count(NEWLINE, 0, long_number.start()) + 1}" if long_number else ""
        raise RecipeError([Problem(where, f"not valid TOML: {shorten(str(exc), 120)}")]) from None
    except RecursionError:
        raise RecipeError([Problem(_deep_line(text), TOO_DEEP)]) from None


def _deep_line(text: str) -> str:
    """The line where brackets first nest deeper than `MAX_DEPTH` (a rough scan that skips
    strings and comments), or "" if none does."""
    depth, quote, line = 0, "", 1
    for index, char in enumerate(text):
        if char == "\n":
            line += 1
            quote = "" if quote == "#" else quote
        elif quote:
            if char == quote and (quote == "'" or text[index - 1] != "\\"):
                quote = ""
        elif char in "\"'#":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return f"line {line}"
        elif char in "]}":
            depth = max(depth - 1, 0)
    return ""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b=VALUE` into its key path and VALUE, read as one TOML value (else kept as a
    string). A VALUE nested too deeply is a `RecipeError` naming the override."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise RecipeError(
            [Problem(f"--set {text}", "expected KEY=VALUE with a dotted KEY, e.g. optimizer.lr=0.1")]
        )
    try:
        document = tomllib.loads(f"v = {raw}")
    except ValueError:  # not TOML (TOMLDecodeError is a ValueError), or a number too long to read
        document = {"v": raw}
    except RecursionError:
        raise RecipeError([Problem(f"--set {text}", TOO_DEEP)]) from None
    if len(document) != 1:  # e.g. "1\nx = 2": the second line would be dropped unseen
        raise RecipeError([Problem(f"--set {text}", "VALUE must be one TOML value")])
    return [p.strip() for p in parts], document["v"]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply each `--set` to the parsed recipe in place; integer keys index arrays."""
    for text in overrides:
        parts, value = parse_override(text)
        set_key(data, parts, value, f"--set {text}")
    return data


def set_key(data: dict[str, Any], parts: list[str], value: Any, place: str) -> None:
    """Set the value at a dotted key's `parts` (tables made as needed; an integer part indexes
    an array); `RecipeError` at `place` when a part is not a table."""
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list) and _index(part) < len(node):
            index: Any = _index(part)
        elif isinstance(node, dict):
            index = part
        else:
            where = ".".join(parts[:depth]) or "(top)"
            raise RecipeError([Problem(place, f"'{shorten(where)}' is not a table")])
        if last:
            node[index] = value
        else:
            if isinstance(node, dict) and index not in node:
                node[index] = {}
            node = node[index]


def _index(part: str) -> int:
    """An array index written in a --set key, or a number past any array for other text."""
    return int(part) if part.isascii() and part.isdigit() and len(part) < 10 else 2**63
