"""Recipe composition: `include = ["base.toml", …]` at the top of a recipe, and where every key
of the composed recipe came from.

`compose(path)` reads a recipe and the files it includes (and those include, depth first) and
merges them: tables merge key by key, anything else — a value, an array, an array of tables —
is replaced whole; a later include wins over an earlier one and the including file over all
its includes. The result is one plain recipe table, as if written in one file.

Every included file is untrusted input like the recipe itself, read with the same limits
(`recipe_file`) and a few more: a relative path to a `.toml` file (relative to the file that
includes it), a regular file (never a symbolic link, a folder or a device), at most
`MAX_INCLUDE_DEPTH` levels and `MAX_INCLUDED_FILES` files, `MAX_BYTES` in all. A cycle, a
missing or unreadable file is a `RecipeError` naming the including file, its `include` line
and the file. `Composed.locate` names, for each validation problem, the file and line its key
came from (or the `--set` that set it).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeforge.errors import Problem, RecipeError, shorten
from pipeforge.recipe_file import MAX_BYTES, apply_overrides, decode, parse_override, parse_toml, read_text
from pipeforge.recipe_lines import key_lines, lookup, split_path

INCLUDE = "include"
MAX_INCLUDE_DEPTH = 8  # a recipe including one including one … eight deep is already a lot
MAX_INCLUDED_FILES = 64  # every file read, counted again when included again (a diamond)
LOCATED = 500  # problems given an origin: more than fit in a message (errors.LISTED_CHARS)


@dataclass
class Source:
    """One file read: how messages name it, its text (kept to find key lines later) and its
    own parsed table (without `include`)."""

    shown: str
    text: str
    data: dict[str, Any]
    _lines: dict[tuple[Any, ...], int] | None = None

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The line the deepest known prefix of `path` is written on, found when first asked."""
        if self._lines is None:
            self._lines = key_lines(self.text, self.data)
        return lookup(self._lines, path)


@dataclass
class Owner:
    """Which source set a value of the composed recipe (index into `Composed.sources`); for a
    table, also who set each of its keys. A value set whole has no `keys`: its parts come from
    the same file."""

    source: int
    keys: dict[str, Owner] = field(default_factory=dict)


@dataclass
class Composed:
    """A composed recipe: its `data`, every file read (the recipe first) and who set what."""

    data: dict[str, Any]
    sources: list[Source]
    owner: Owner
    overrides: list[tuple[tuple[str, ...], str]] = field(default_factory=list)

    def apply_overrides(self, overrides: list[str]) -> None:
        """Apply `--set` overrides to `data`, remembering each as the origin of its key."""
        apply_overrides(self.data, overrides)
        self.overrides += [(tuple(parse_override(text)[0]), f"--set {text}") for text in overrides]

    def origin(self, dotted: str) -> str | None:
        """Where the key at a problem's dotted path (`metrics[0].top_k`) was set: `--set …`,
        `line N` (of the recipe itself) or `FILE, line N` (of an included file); the file alone
        when its line is unknown, None when nothing is known."""
        path = split_path(dotted)
        if path is None:
            return None
        for keys, text in reversed(self.overrides):  # the last override of a key is what holds
            if len(keys) <= len(path) and all(str(a) == b for a, b in zip(path, keys)):
                return text
        node, depth = self.owner, 0
        for part in path:
            if not isinstance(part, str) or part not in node.keys:
                break
            node, depth = node.keys[part], depth + 1
        source = self.sources[node.source]
        line = source.line_of(path)
        if node.source == 0:
            return f"line {line}" if line is not None else None
        return f"{source.shown}, line {line}" if line is not None else source.shown

    def locate(self, error: RecipeError) -> RecipeError:
        """`error` with the origin of its first `LOCATED` problems filled in (see `origin`):
        more than a message shows, and the rest of twenty thousand would cost seconds."""
        problems = [problem if problem.origin or index >= LOCATED else replace(problem, origin=self.origin(problem.path))
                    for index, problem in enumerate(error.problems)]
        return RecipeError(problems, error.source)


def compose(path: Path) -> Composed:
    """Read the recipe at `path` with everything it includes, merged. Raises `RecipeError`
    naming the file (and the `include` line) of any problem with a file or an include."""
    text = read_text(path)
    try:
        data = parse_toml(text)
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None
    reader = _Reader()
    try:
        info = os.stat(path)
        reader.seen.append((info.st_dev, info.st_ino))
    except (OSError, ValueError):  # read, yet not there: a pipe (e.g. <(…)), which nothing can include
        pass
    root = Source(str(path), text, data)
    reader.sources.append(root)
    merged, owner = reader.expand(root, 0, Path(path).parent, str(Path(path).parent), chain=[])
    return Composed(merged, reader.sources, owner)


class _Reader:
    """Reads includes depth first, with the limits of the whole composition."""

    def __init__(self) -> None:
        self.sources: list[Source] = []
        self.bytes = 0
        self.seen: list[tuple[int, int]] = []  # (device, inode) of each file on the current chain

    def expand(self, source: Source, index: int, folder: Path, shown_folder: str,
               chain: list[str]) -> tuple[dict[str, Any], Owner]:
        """`source`'s table with its includes merged under it, and who set each key."""
        self.bytes += len(source.text)
        includes = _include_list(source)
        merged: dict[str, Any] = {}
        owner = Owner(index)
        if includes and len(chain) >= MAX_INCLUDE_DEPTH:
            raise _include_error(source, f"includes nest more than {MAX_INCLUDE_DEPTH} deep: "
                                         f"{' → '.join([*chain, source.shown])}")
        for name in includes:
            child = self._read(source, name, folder, shown_folder, chain)
            child_index = len(self.sources)
            self.sources.append(child)
            target = folder / name
            data, child_owner = self.expand(child, child_index, target.parent,
                                            os.path.normpath(os.path.join(shown_folder, os.path.dirname(name))),
                                            [*chain, source.shown])
            self.seen.pop()
            _merge(merged, owner, data, child_owner)
        own = {key: value for key, value in source.data.items() if key != INCLUDE}
        _merge(merged, owner, own, Owner(index))
        owner.source = index
        return merged, owner

    def _read(self, parent: Source, name: str, folder: Path, shown_folder: str, chain: list[str]) -> Source:
        shown = os.path.normpath(os.path.join(shown_folder, name))
        if len(self.sources) >= MAX_INCLUDED_FILES:
            raise _include_error(parent, f"more than {MAX_INCLUDED_FILES} included files in all")
        target = folder / name
        try:
            handle = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            why = ("it is a symbolic link; an included recipe must be a regular file"
                   if exc.errno == errno.ELOOP else (exc.strerror or str(exc)))
            raise _include_error(parent, f"cannot read {_named(name, shown)}: {why}") from None
        except ValueError:  # a NUL in the name
            raise _include_error(parent, f"'{shorten(name, keep_end=True)}' is not a file name") from None
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO, a device: never read
            os.close(handle)
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise _include_error(parent, f"cannot read {_named(name, shown)}: it is {kind}")
        with os.fdopen(handle, "rb") as file:
            identity = (info.st_dev, info.st_ino)
            if identity in self.seen:
                cycle = " → ".join([*chain, parent.shown, shown])
                raise _include_error(parent, f"'{shorten(name, keep_end=True)}' is included in a cycle: {shorten(cycle, 300)}",
                                     "a file cannot include itself, directly or through others")
            try:
                raw = file.read(MAX_BYTES - self.bytes + 1)
            except OSError as exc:
                raise _include_error(parent, f"cannot read {_named(name, shown)}: {exc.strerror or exc}") from None
        if self.bytes + len(raw) > MAX_BYTES:
            raise _include_error(parent, f"the recipe and its includes are larger than {MAX_BYTES // 2**20} MB "
                                         "in all: not a recipe")
        self.seen.append(identity)
        try:
            text = decode(raw)
            data = parse_toml(text)
        except RecipeError as exc:
            raise RecipeError(exc.problems, f"{shown} (included by {parent.shown})") from None
        return Source(shown, text, data)



def _named(name: str, shown: str) -> str:
    """'base.toml', with the path it was looked for at when that says more."""
    return f"'{shorten(name, keep_end=True)}'" + (f" ({shorten(shown, keep_end=True)})" if shown != os.path.normpath(name) else "")


def _include_list(source: Source) -> list[str]:
    """The file's `include` value, checked: an array of relative paths to `.toml` files (one
    string is taken as an array of one)."""
    value = source.data.get(INCLUDE)
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise _include_error(source, "expected an array of file names, e.g. include = [\"base.toml\"]")
    for name in names:
        if not name.endswith(".toml"):
            raise _include_error(source, f"'{shorten(name, keep_end=True)}' is not a .toml file", "an included recipe is a .toml file")
        if os.path.isabs(name) or name.startswith("~"):
            raise _include_error(source, f"'{shorten(name, keep_end=True)}' is not a relative path",
                                 "give the path relative to the including file, so the recipes move together")
    return names


def _include_error(source: Source, message: str, hint: str | None = None) -> RecipeError:
    line = source.line_of((INCLUDE,))
    return RecipeError([Problem(INCLUDE, message, hint, origin=f"line {line}" if line else None)], source.shown)


def _merge(base: dict[str, Any], base_owner: Owner, top: dict[str, Any], top_owner: Owner) -> None:
    """Merge `top` into `base` in place: tables key by key, everything else replaced whole;
    `base_owner` follows. Iterative: included files are checked for depth only later."""
    stack = [(base, base_owner, top, top_owner)]
    while stack:
        into, into_owner, new, new_owner = stack.pop()
        if not into_owner.keys:  # a table set whole by one file: its keys are that file's
            into_owner.keys = {key: Owner(into_owner.source) for key in into}
        into_owner.source = new_owner.source
        for key, value in new.items():
            below = new_owner.keys.get(key, Owner(new_owner.source))
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                into[key] = dict(into[key])  # copied before it changes: it may be a file's own table
                stack.append((into[key], into_owner.keys.setdefault(key, Owner(into_owner.source)), value, below))
            else:
                into[key] = value
                into_owner.keys[key] = below
