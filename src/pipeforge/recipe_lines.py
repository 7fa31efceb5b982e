"""Which line of a recipe file each key is written on, for messages (`tomllib` gives no positions).

`key_lines` scans the text line by line the way TOML is laid out: `[table]` and `[[array]]`
headers, then `key = value` lines (keys bare, quoted or dotted). It skips what lies inside
multi-line strings and arrays, and keeps only keys the parsed table really holds, so a line it
names is right or it names none; callers then name the file alone. Never raises.
"""

from __future__ import annotations

import re
from typing import Any

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"')
_SIMPLE = re.compile(r"[ \t]*([A-Za-z0-9_-]+)[ \t]*=[^\"'\[{#]*$")
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")
_BASIC_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\", "e": "\x1b"}


def split_path(dotted: str) -> tuple[Any, ...] | None:
    """`metrics[0].top_k` → ("metrics", 0, "top_k"); None for a place that is no key path
    (`line 3, column 1`, `--set …`, empty)."""
    if not dotted or dotted.startswith(("--set", "line ")) or " " in dotted:
        return None
    parts: list[Any] = []
    position = 0
    for found in _PATH_PART.finditer(dotted):
        if found.start() != position:
            return None
        parts.append(int(found.group(1)) if found.group(1) is not None else found.group(2))
        position = found.end()
    return tuple(parts) if position == len(dotted) else None


def lookup(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    """The line of the longest prefix of `path` found in `lines`."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def key_lines(text: str, data: dict[str, Any]) -> dict[tuple[Any, ...], int]:
    """{key path: line number} for the tables, array-of-tables elements and keys written in
    `text`, whose parsed form is `data`."""
    lines: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    arrays: dict[tuple[Any, ...], int] = {}  # array of tables (indexed path) → its last index
    scanner = _Values()
    for number, line in enumerate(text.split("\n"), 1):
        if scanner.inside:  # a line of a multi-line string or array: no key starts here
            scanner.feed(line, 0)
            continue
        simple = _SIMPLE.match(line)
        if simple:  # most lines: `key = 12`, nothing that can open a string or an array
            lines.setdefault((*table, simple.group(1)), number)
            continue
        start = len(line) - len(line.lstrip(" \t"))
        if line.startswith("[[", start):
            found = _read_key(line, start + 2)
            if found and line.startswith("]]", found[1]):
                table = _indexed(found[0], arrays, last_is_array=True)
                lines.setdefault(table[:-1], number)
                lines[table] = number
            continue
        if line.startswith("[", start):
            found = _read_key(line, start + 1)
            if found and line.startswith("]", found[1]):
                table = _indexed(found[0], arrays, last_is_array=False)
                lines.setdefault(table, number)
            continue
        found = _read_key(line, start)
        if found is None or not line.startswith("=", found[1]):
            continue
        keys = found[0]
        for end in range(1, len(keys) + 1):
            lines.setdefault((*table, *keys[:end]), number)
        scanner.feed(line, found[1] + 1)
    return {path: number for path, number in lines.items() if _holds(data, path)}


def _indexed(keys: list[str], arrays: dict[tuple[Any, ...], int], last_is_array: bool) -> tuple[Any, ...]:
    """A header's key path with the current index after each array of tables it passes."""
    path: tuple[Any, ...] = ()
    for position, key in enumerate(keys):
        path = (*path, key)
        if last_is_array and position == len(keys) - 1:
            arrays[path] = arrays.get(path, -1) + 1
            path = (*path, arrays[path])
        elif path in arrays:
            path = (*path, arrays[path])
    return path


def _read_key(line: str, at: int) -> tuple[list[str], int] | None:
    """The (dotted) key starting at `line[at]` (after blanks) and where it ends, past blanks."""
    keys: list[str] = []
    while True:
        at = _skip_blanks(line, at)
        if line.startswith('"', at):
            found = _basic_string(line, at + 1)
        elif line.startswith("'", at):
            end = line.find("'", at + 1)
            found = (line[at + 1:end], end + 1) if end >= 0 else None
        else:
            match = _BARE.match(line, at)
            found = (match.group(), match.end()) if match else None
        if found is None:
            return None
        keys.append(found[0])
        at = _skip_blanks(line, found[1])
        if not line.startswith(".", at):
            return keys, at
        at += 1


def _basic_string(line: str, at: int) -> tuple[str, int] | None:
    """A `"…"` key's text from just after its opening quote, and the index after it."""
    out: list[str] = []
    while at < len(line):
        char = line[at]
        if char == '"':
            return "".join(out), at + 1
        if char == "\\":
            code = line[at + 1:at + 2]
            if code in _BASIC_ESCAPES:
                out.append(_BASIC_ESCAPES[code])
                at += 2
                continue
            width = {"u": 4, "U": 8}.get(code)
            digits = line[at + 2:at + 2 + width] if width else ""
            if not width or len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                return None
            value = int(digits, 16)
            if value > 0x10FFFF:
                return None
            out.append(chr(value))
            at += 2 + width
            continue
        out.append(char)
        at += 1
    return None


def _skip_blanks(line: str, at: int) -> int:
    while at < len(line) and line[at] in " \t":
        at += 1
    return at


def _holds(data: Any, path: tuple[Any, ...]) -> bool:
    node = data
    for part in path:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    return True


class _Values:
    """Follows values across lines: whether the next line is still inside a multi-line
    string or an array / inline table."""

    def __init__(self) -> None:
        self.quote = ""  # the open multi-line string's delimiter
        self.depth = 0  # open [ and {

    @property
    def inside(self) -> bool:
        return bool(self.quote) or self.depth > 0

    def feed(self, line: str, at: int) -> None:
        while at < len(line):
            if self.quote:
                end = self._close(line, at)
                if end < 0:
                    return
                at, self.quote = end, ""
                continue
            char = line[at]
            if char == "#":
                return
            if line.startswith(('"""', "'''"), at):
                self.quote, at = line[at:at + 3], at + 3
            elif char in "\"'":
                at = self._close_single(line, at + 1, char)
            elif char in "[{":
                self.depth, at = self.depth + 1, at + 1
            elif char in "]}":
                self.depth, at = max(self.depth - 1, 0), at + 1
            else:
                at += 1

    def _close(self, line: str, at: int) -> int:
        """The index after the open multi-line string's end on this line, or -1."""
        while at < len(line):
            if self.quote == '"""' and line[at] == "\\":
                at += 2
                continue
            if line.startswith(self.quote, at):
                at += 3
                while at < len(line) and line[at] == self.quote[0]:  # up to two quotes end the text
                    at += 1
                return at
            at += 1
        return -1

    @staticmethod
    def _close_single(line: str, at: int, quote: str) -> int:
        """The index after the one-line string that starts before `at` (the line's end if
        it does not close)."""
        if quote == "'":
            end = line.find("'", at)
            return end + 1 if end >= 0 else len(line)
        found = _BASIC_BODY.match(line, at)
        return found.end() if found else len(line)
