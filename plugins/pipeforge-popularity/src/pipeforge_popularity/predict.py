"""Reading products for `pipeforge predict`; imported only when predict runs (it needs torch)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import torch

from pipeforge import DataError

FIELDS = ("price", "rating")
EXAMPLE = "'[[7.5, 3.0]]'"


def read_products(params: Any, inputs: list[str], context: Any) -> torch.Tensor:
    """Products for `pipeforge predict`: each INPUT is a CSV file (header `price,rating`), a
    JSON file, or a JSON literal such as `'[[7.5, 3.0]]'`; JSON holds `[price, rating]` rows
    or `{"price": …, "rating": …}` objects. All rows form one float32 batch, in input order.

    An input that names an existing file is read by its content (JSON when it starts with
    `[` or the name ends in .json, else CSV); anything else must be a JSON literal. Raises
    `DataError` naming the input (and line or row) that cannot be read, however hostile: JSON
    nested too deep or numbers too long for Python, a CSV field over the csv module's limit;
    the values a message quotes are cut short.
    """
    rows: list[list[float]] = []
    for text in inputs:
        rows += _read_one(text)
    return torch.tensor(rows, dtype=torch.float32)


def _read_one(text: str) -> list[list[float]]:
    path = Path(text)
    if _is_file(path):
        try:
            content = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{text}: cannot read it as a text file ({exc})") from None
        if path.suffix.lower() == ".json" or content.lstrip().startswith(("[", "{")):
            return _from_json(content, text)
        return _from_csv(content, text)
    if text.lstrip().startswith(("[", "{")):
        return _from_json(text, _shown(text, 60))  # a literal names itself, cut short
    raise DataError(
        f"{_shown(text)}: no such file, and not a JSON list of [price, rating] rows such as {EXAMPLE}"
    )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a JSON literal longer than a file name may be
        return False


def _from_json(content: str, source: str) -> list[list[float]]:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: not valid JSON ({exc}); expected rows such as {EXAMPLE}") from None
    except RecursionError:
        raise DataError(f"{source}: JSON nested too deep to read; expected rows such as {EXAMPLE}") from None
    except ValueError as exc:  # an integer of thousands of digits: Python refuses to convert it
        raise DataError(f"{source}: a number in it cannot be read ({_shown(str(exc), 120)}); "
                        f"expected rows such as {EXAMPLE}") from None
    if isinstance(data, dict) or (isinstance(data, list) and data and not isinstance(data[0], (list, dict))):
        data = [data]  # one product on its own: [7.5, 3.0] or {"price": 7.5, "rating": 3.0}
    if not isinstance(data, list) or not data:
        raise DataError(f"{source}: expected a non-empty JSON list of [price, rating] rows such as {EXAMPLE}")
    return [_row(item, f"{source}: row {i + 1}") for i, item in enumerate(data)]


def _row(item: Any, where: str) -> list[float]:
    if isinstance(item, dict):
        missing = [name for name in FIELDS if name not in item]
        if missing:
            found = _shown(", ".join(map(str, item))) or "none"
            raise DataError(f"{where}: missing {', '.join(missing)} (found keys {found})")
        item = [item[name] for name in FIELDS]
    if not isinstance(item, list) or len(item) != 2:
        raise DataError(f"{where}: expected [price, rating], found {_json(item)}")
    return [_number(value, name, where) for value, name in zip(item, FIELDS)]


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: {name} must be a number, found {_json(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise DataError(f"{where}: {name} must be a number, found {_shown(repr(value))}") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {name} must be a finite number, found {_shown(repr(value))}")
    return number


def _json(value: Any) -> str:
    """`value` as JSON for a message, cut short (it may be huge, or nested too deep to write)."""
    try:
        return _shown(json.dumps(value))
    except (RecursionError, ValueError):
        return f"a {type(value).__name__} nested too deep to show"


def _shown(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _from_csv(content: str, source: str) -> list[list[float]]:
    reader = csv.DictReader(content.splitlines())
    try:
        return _csv_rows(reader, source)
    except csv.Error as exc:  # e.g. a field over the csv module's limit (128 KB)
        raise DataError(f"{source}: line {reader.line_num}: not readable as CSV ({exc})") from None


def _csv_rows(reader: csv.DictReader, source: str) -> list[list[float]]:
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in FIELDS if name not in header]
    if missing:
        raise DataError(
            f"{source}: expected a CSV file with header price,rating; the header "
            f"{_shown(','.join(reader.fieldnames or [])) or '(empty file)'} has no {', '.join(missing)}"
        )
    reader.fieldnames = header
    rows = []
    for record in reader:
        if not any((value or "").strip() for value in record.values() if isinstance(value, str)):
            continue  # blank line
        where = f"{source}: line {reader.line_num}"
        rows.append([_number((record.get(name) or "").strip(), name, where) for name in FIELDS])
    if not rows:
        raise DataError(f"{source}: the CSV file has a header but no rows")
    return rows
