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
    `DataError` naming the input (and line or row) that cannot be read.
    """
    rows: list[list[float]] = []
    for text in inputs:
        rows += _read_one(text)
    return torch.tensor(rows, dtype=torch.float32)


def _read_one(text: str) -> list[list[float]]:
    path = Path(text)
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{text}: cannot read it as a text file ({exc})") from None
        if path.suffix.lower() == ".json" or content.lstrip().startswith(("[", "{")):
            return _from_json(content, text)
        return _from_csv(content, text)
    if text.lstrip().startswith(("[", "{")):
        return _from_json(text, text)
    raise DataError(
        f"{text}: no such file, and not a JSON list of [price, rating] rows such as {EXAMPLE}"
    )


def _from_json(content: str, source: str) -> list[list[float]]:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: not valid JSON ({exc}); expected rows such as {EXAMPLE}") from None
    if isinstance(data, dict) or (isinstance(data, list) and data and not isinstance(data[0], (list, dict))):
        data = [data]  # one product on its own: [7.5, 3.0] or {"price": 7.5, "rating": 3.0}
    if not isinstance(data, list) or not data:
        raise DataError(f"{source}: expected a non-empty JSON list of [price, rating] rows such as {EXAMPLE}")
    return [_row(item, f"{source}: row {i + 1}") for i, item in enumerate(data)]


def _row(item: Any, where: str) -> list[float]:
    if isinstance(item, dict):
        missing = [name for name in FIELDS if name not in item]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)} (found keys {', '.join(map(str, item)) or 'none'})")
        item = [item[name] for name in FIELDS]
    if not isinstance(item, list) or len(item) != 2:
        raise DataError(f"{where}: expected [price, rating], found {json.dumps(item)}")
    return [_number(value, name, where) for value, name in zip(item, FIELDS)]


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: {name} must be a number, found {json.dumps(value)}")
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{where}: {name} must be a number, found {value!r}") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {name} must be a finite number, found {value!r}")
    return number


def _from_csv(content: str, source: str) -> list[list[float]]:
    reader = csv.DictReader(content.splitlines())
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in FIELDS if name not in header]
    if missing:
        raise DataError(
            f"{source}: expected a CSV file with header price,rating; the header "
            f"{','.join(reader.fieldnames or []) or '(empty file)'} has no {', '.join(missing)}"
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
