"""Recipe fuzzing: malformed recipes and overrides are refused with a short message that names
the place, never with another exception (issue 12, defects 6, 7 and 12).

A seeded generator mutates every bundled recipe (recipes/ and benchmarks/recipes/): wrong
types, out-of-bounds numbers, unknown keys, deep nesting, huge values, bad bytes, TOML syntax
errors and bad `--set` overrides. Each case must raise `RecipeError` (nothing else) whose
message is under 4 KB, names the file (or comes from an in-memory recipe) and gives every
problem a place. The in-process checks call `load_recipe` / `validate_recipe` (fast); a few
end-to-end checks run `pipeforge validate` as a user does (exit 2, no traceback).

CI runs a reduced count (`CASES_PER_KIND` × kinds ≈ 300); the full run (≥ 1,000 cases) is

    PIPEFORGE_FULL_HARDENING=1 python -m pytest -q tests/test_recipe_fuzz.py -p no:cacheprovider

and `PIPEFORGE_FUZZ_SEED=N` replays another seed (the default is fixed, so CI is repeatable).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import tomli_w

from conftest import ROOT, run_pipeforge

from pipeforge.errors import RecipeError
from pipeforge.plugins import discover
from pipeforge.recipe import load_recipe, validate_recipe

FULL = os.environ.get("PIPEFORGE_FULL_HARDENING") == "1"
SEED = int(os.environ.get("PIPEFORGE_FUZZ_SEED", "20261212"))
# Cases per mutation kind: 11 kinds, so about 300 in CI and 1,650 in the full run.
CASES_PER_KIND = 150 if FULL else 28
# The largest "huge" value: a megabyte in the full run, 100 KB in CI; and how many bad items
# (or unknown keys) a "huge" array (or table) holds.
HUGE = 1_000_000 if FULL else 100_000
MANY = 20_000 if FULL else 5_000
MESSAGE_LIMIT = 4096

BUNDLED = sorted([*(ROOT / "recipes").glob("*.toml"), *(ROOT / "benchmarks" / "recipes").glob("*.toml")])


@dataclass
class Case:
    """One malformed recipe: file bytes (+ overrides) for `load_recipe`, or `data` for
    `validate_recipe`; `what` says how it was made, to replay a failure."""

    what: str
    text: bytes | None = None
    overrides: list[str] = field(default_factory=list)
    data: dict[str, Any] | None = None
    needle: str | None = None  # a word the message must hold (e.g. "nest", "UTF-8")


@pytest.fixture(scope="module")
def registry():
    return discover().registry


@pytest.fixture(scope="module")
def bases() -> list[Base]:
    import tomllib

    return [Base(path, path.read_bytes(), tomllib.loads(path.read_text(encoding="utf-8"))) for path in BUNDLED]


# ------------------------------------------------------------------ the recipe as a tree of values


def leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) below `node`: scalars, arrays and tables alike (not the root)."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append(((*path, key), value))
        found += leaves(value, (*path, key))
    return found


def tables(node: dict) -> list[tuple[tuple, dict]]:
    """The recipe's own table (path ()) and every table in it."""
    return [((), node), *((path, value) for path, value in leaves(node) if isinstance(value, dict))]


def replaced(data: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def dotted(path: tuple) -> str:
    return ".".join(str(part) for part in path)


def inline(value: Any) -> str:
    """`value` as one TOML value, as `--set` reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {inline(v)}" for k, v in value.items()) + "}"


def nested(depth: int, rng: random.Random) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"a": value}
    return value


def nested_text(depth: int, rng: random.Random) -> str:
    return "[" * depth + "]" * depth if rng.random() < 0.5 else "{a = " * depth + "1" + "}" * depth


# ------------------------------------------------------------------ mutations, each always invalid


def wrong_type(value: Any, rng: random.Random) -> Any:
    """A value of a type the field can never take (an int is never offered to a float field:
    that one is valid)."""
    if isinstance(value, bool):
        options = [1, "true", 0.5, [True], {"v": True}]
    elif isinstance(value, int):
        options = [True, str(value), [value], {"v": value}]
    elif isinstance(value, float):
        options = [False, str(value), [value], {"v": value}]
    elif isinstance(value, str):
        options = [True, 7, 0.5, [value], {"v": value}]
    elif isinstance(value, list):
        options = [True, 5, "x", {"v": 1}]
    else:
        options = [True, 5, "x", [1]]
    return rng.choice(options)


def out_of_bounds(value: Any, rng: random.Random) -> Any | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return rng.choice([2**63, -(2**63) - 1, 2**64 + 5, 10**30])
    if isinstance(value, float):
        return rng.choice([math.inf, -math.inf, math.nan])
    return None


# Overrides that are out of bounds for a component the base recipe names (component, override).
KNOWN_BAD = [
    (None, "trainer.epochs=0"), (None, "trainer.batch_size=0"), (None, "trainer.num_workers=-1"),
    (None, "trainer.keep_checkpoints=0"), (None, "trainer.best_metric='nope'"), (None, "trainer.epochs=true"),
    (None, 'trainer.epochs="5"'), (None, "trainer.device='tpu'"), (None, "trainer.eval_splits=['']"),
    (None, "trainer.dist_timeout_s=0"), (None, f"run.name='{'n' * 5000}'"), (None, "run.name='a b'"),
    (None, "run.seed=1.5"), (None, "trainer.precision='fp16'"),
    ("sgd", "optimizer.lr=0"), ("sgd", "optimizer.lr=-0.1"), ("sgd", "optimizer.momentum=1.5"),
    ("sgd", "optimizer.lr=true"), ("sgd", "optimizer.dampening=2"), ("sgd", "optimizer.weight_decay=-1"),
    ("adam", "optimizer.betas=[1.5, 2.0]"), ("adam", "optimizer.betas=[0.9]"), ("adam", "optimizer.eps=0"),
    ("mlp", "model.hidden=[-1]"), ("mlp", "model.dropout=1.0"), ("mlp", "model.activation='swish'"),
    ("synthetic_classification", "dataset.classes=1"), ("synthetic_classification", "dataset.n_train=0"),
    ("synthetic_classification", "metrics.0.top_k=50"), ("simple.random", "metrics.0.top_k=5"),
    ("simple.random", "dataset.classes=true"), ("popularity.products", "dataset.price_range=[5.0, 1.0]"),
    ("popularity.products", "dataset.threshold=nan"), ("fashion.mlp", "model.hidden=-1"),
    ("cifar.resnet18", "model.num_classes=1"), ("cifar.cifar10", "dataset.train_transforms=[]"),
    ("catfish.image_folder", "dataset.splits=['val']"), ("catfish.image_folder", "dataset.splits=['train', '../x']"),
    ("catfish.image_folder", "dataset.transforms.1.size=[0, 0]"),
    ("catfish.image_folder", "dataset.transforms.3.std=[0.0, 0.2, 0.2]"),
    ("cifar.cifar10", "dataset.train_transforms.0.scale=[0.9, 0.1]"),
    ("cifar.cifar10", "dataset.train_transforms.1.p=1.5"), ("cross_entropy", "loss.label_smoothing=2"),
    ("tensorboard", "callbacks.0.log_every_n_steps=0"), ("tensorboard", "callbacks.0.flush_every_s=inf"),
]

BAD_OVERRIDES = [
    "novalue", "=1", "a..b=1", ".a=1", "a.=1", "run.name.x=1", "metrics.5.top_k=1", "metrics.²=1",
    "trainer.epochs=", "trainer.epochs=1\nx = 2", "optimizer.lr=1e999", "trainer.epochs=" + "9" * 5000,
    "zzz.a=1", "run=1", "trainer=[1]", "metrics=1", "dataset.name=7", "run.name=" + "é" * 300,
]

GARBAGE_LINES = ["= 1", "[", "[[x]", "key = ", 'k = "unterminated', "k = 1 2", "[run]", "a = [1,", "x = {", "]]"]


@dataclass
class Base:
    """A bundled recipe to mutate: its file, bytes, parsed data and every value in it."""

    path: Path
    raw: bytes
    data: dict[str, Any]

    @property
    def spots(self) -> list[tuple[tuple, Any]]:
        return leaves(self.data)

    def known_bad(self) -> list[str]:
        """The KNOWN_BAD overrides that apply to this recipe's components."""
        names = {value for path, value in self.spots if path[-1] == "name" and isinstance(value, str)}
        return [override for component, override in KNOWN_BAD if component is None or component in names]


def wrong_type_case(base: Base, rng: random.Random) -> Case:
    where, value = rng.choice(base.spots)
    bad = wrong_type(value, rng)
    mutated = replaced(base.data, where, bad)
    if rng.random() < 0.5:
        return Case(f"{dotted(where)} = {bad!r}", data=mutated)
    return Case(f"file with {dotted(where)} = {bad!r}", text=tomli_w.dumps(mutated).encode())


def out_of_bounds_case(base: Base, rng: random.Random) -> Case:
    numbers = [(p, v) for p, v in base.spots if out_of_bounds(v, rng) is not None]
    if rng.random() < 0.5 and numbers:
        where, value = rng.choice(numbers)
        override = f"{dotted(where)}={inline(out_of_bounds(value, rng))}"
    else:
        override = rng.choice(base.known_bad())
    return Case(f"--set {override[:60]}", text=base.raw, overrides=[override])


def unknown_key_case(base: Base, rng: random.Random) -> Case:
    table_path, _ = rng.choice(tables(base.data))
    key = "zz_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_-") for _ in range(rng.randint(1, 12)))
    value = rng.choice([1, "x", True, [1], {"a": 1}])
    mutated = replaced(base.data, (*table_path, key), value) if table_path else {**base.data, key: value}
    return Case(dotted((*table_path, key)), data=mutated)


def deep_nesting_case(base: Base, rng: random.Random) -> Case:
    depth = rng.choice([40, 200, 1000, 3000] if FULL else [40, 200, 1000])
    where, _ = rng.choice(base.spots)
    form = rng.choice(["data", "file", "set", "dotted key"])
    if form == "data":
        return Case(f"{dotted(where)} nested {depth}", data=replaced(base.data, where, nested(depth, rng)), needle="nest")
    if form == "file":
        text = base.raw + f"\n[zz_deep]\nv = {nested_text(depth, rng)}\n".encode()
        return Case(f"file value nested {depth}", text=text, needle="nest")
    if form == "set":
        return Case(f"--set {dotted(where)} nested {depth}", text=base.raw,
                    overrides=[f"{dotted(where)}={nested_text(depth, rng)}"], needle="nest")
    text = (".".join(["k"] * depth) + " = 1\n").encode() + base.raw
    return Case(f"dotted key {depth} deep", text=text, needle="nest")


def huge_value_case(base: Base, rng: random.Random) -> Case:
    choice = rng.random()
    if choice < 0.4:
        where, _ = rng.choice([(p, v) for p, v in base.spots if isinstance(v, str)])
        huge = "x" * rng.randint(HUGE // 10, HUGE)
        return Case(f"{dotted(where)} = {len(huge):,} chars", data=replaced(base.data, where, huge))
    lists = [(p, v) for p, v in base.spots if isinstance(v, list)]
    if choice < 0.7 and lists:
        where, _ = rng.choice(lists)
        return Case(f"{dotted(where)} = {MANY:,} bad items", data=replaced(base.data, where, [True] * MANY))
    table_path, table = rng.choice(tables(base.data))
    many = {**table, **{f"zz{i}": i for i in range(MANY)}}
    mutated = replaced(base.data, table_path, many) if table_path else many
    return Case(f"{MANY:,} unknown keys in {dotted(table_path) or 'the top'}", data=mutated)


def bad_bytes_case(base: Base, rng: random.Random) -> Case:
    how, text = bad_bytes(base.raw, rng)
    return Case(how, text=text, needle="UTF-8")


def syntax_error_case(base: Base, rng: random.Random) -> Case:
    lines = base.raw.split(b"\n")
    at = rng.randrange(len(lines) + 1)
    garbage = rng.choice(GARBAGE_LINES)
    return Case(f"line {at + 1} = {garbage!r}", text=b"\n".join([*lines[:at], garbage.encode(), *lines[at:]]))


def bad_override_case(base: Base, rng: random.Random) -> Case:
    override = rng.choice(BAD_OVERRIDES)
    return Case(f"--set {override[:60]!r}", text=base.raw, overrides=[override])


def override_type_case(base: Base, rng: random.Random) -> Case:
    where, value = rng.choice(base.spots)
    override = f"{dotted(where)}={inline(wrong_type(value, rng))}"
    return Case(f"--set {override[:60]}", text=base.raw, overrides=[override])


def many_overrides_case(base: Base, rng: random.Random) -> Case:
    """Several bad overrides at once: every problem found, still one short message."""
    picks = rng.sample(base.known_bad(), 4)
    return Case(f"{len(picks)} bad overrides", text=base.raw, overrides=picks)


def missing_table_case(base: Base, rng: random.Random) -> Case:
    gone = rng.choice([key for key in ("run", "dataset", "model", "optimizer") if key in base.data])
    return Case(f"without [{gone}]", data={k: v for k, v in base.data.items() if k != gone})


MUTATIONS: dict[str, Callable[[Base, random.Random], Case]] = {
    "wrong type": wrong_type_case, "out of bounds": out_of_bounds_case, "unknown key": unknown_key_case,
    "deep nesting": deep_nesting_case, "huge value": huge_value_case, "bad bytes": bad_bytes_case,
    "syntax error": syntax_error_case, "bad override": bad_override_case,
    "override type": override_type_case, "many overrides": many_overrides_case,
    "missing table": missing_table_case,
}


def bad_bytes(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A recipe's bytes made not UTF-8: another encoding, a stray byte, a NUL, or binary."""
    text = raw.decode("utf-8")
    choice = rng.randrange(6)
    if choice == 0:
        encoding = rng.choice(["latin-1", "cp1252"])
        return encoding, ("# café crème brûlée\n" + text).encode(encoding, errors="replace")
    if choice == 1:
        encoding = rng.choice(["utf-16", "utf-32", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
        return encoding, text.encode(encoding)
    if choice == 2:  # one byte that cannot start or continue a UTF-8 sequence here, between ASCII
        spots = [i for i in range(1, len(raw)) if raw[i - 1] < 0x80 and raw[i] < 0x80]
        at, byte = rng.choice(spots), rng.choice([0x80, 0xBF, 0xC0, 0xC3, 0xE2, 0xF5, 0xFF])
        return f"byte 0x{byte:02x} at {at}", raw[:at] + bytes([byte]) + raw[at:]
    if choice == 3:
        at = rng.randrange(len(raw))
        return f"NUL at {at}", raw[:at] + b"\0" + raw[at:]
    if choice == 4:
        return "a cut UTF-8 sequence", raw + b"\n# \xe2\x82"
    size = rng.randint(1, 4096)
    return f"{size} random bytes", bytes(rng.randrange(256) for _ in range(size)) + b"\xff"


# ------------------------------------------------------------------ the checks


def check(case: Case, registry, tmp_path: Path) -> str | None:
    """None if `case` is refused as promised, else what went wrong."""
    source = None
    try:
        if case.data is not None:
            validate_recipe(case.data, registry)
        else:
            source = tmp_path / "recipe.toml"
            source.write_bytes(case.text)
            load_recipe(source, registry, case.overrides)
    except RecipeError as error:
        message = str(error)
        if len(message) >= MESSAGE_LIMIT:
            return f"message of {len(message):,} characters"
        if source is not None and str(source) not in message:
            return f"message does not name the file: {message[:300]}"
        if not error.problems or not all(problem.path for problem in error.problems):
            return f"a problem without a place: {message[:300]}"
        if case.needle and case.needle not in message:
            return f"message lacks {case.needle!r}: {message[:300]}"
        return None
    except Exception as exc:  # noqa: BLE001 — any other exception is the failure looked for
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return "accepted"


@pytest.mark.parametrize("kind", list(MUTATIONS))
def test_malformed_recipes_are_refused_with_a_short_message_naming_the_place(kind, registry, bases, tmp_path):
    rng = random.Random(f"{SEED}-{kind}")
    failures = []
    for number in range(CASES_PER_KIND):
        base = bases[number % len(bases)]
        case = MUTATIONS[kind](base, rng)
        problem = check(case, registry, tmp_path)
        if problem is not None:
            failures.append(f"{kind} of {base.path.name}: {case.what}: {problem}")
    assert not failures, f"{len(failures)} of {CASES_PER_KIND} cases (seed {SEED}):\n" + "\n".join(failures[:20])


def test_the_generator_starts_from_recipes_that_validate(registry, bases, tmp_path):
    """Mutations prove something only if the recipes they start from are good, also as the
    generator writes them back (tomli_w) and with a byte-order mark."""
    assert len(bases) >= 10
    for base in bases:
        validate_recipe(copy.deepcopy(base.data), registry)
        (tmp_path / "w.toml").write_text(tomli_w.dumps(base.data), encoding="utf-8")
        load_recipe(tmp_path / "w.toml", registry)
        (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + base.raw)
        load_recipe(tmp_path / "bom.toml", registry)


def test_the_full_run_is_large_enough():
    """The issue asks for ≥ 1,000 malformed recipes and overrides per full run."""
    assert CASES_PER_KIND * len(MUTATIONS) >= (1000 if FULL else 250)


# ------------------------------------------------------------------ end to end: `pipeforge validate`

QUICKSTART = ROOT / "recipes" / "quickstart.toml"


def _latin1(tmp_path: Path) -> list[Any]:
    path = tmp_path / "latin1.toml"
    path.write_bytes(("# café\n" + QUICKSTART.read_text(encoding="utf-8")).encode("latin-1"))
    return [path]


def _utf16(tmp_path: Path) -> list[Any]:
    path = tmp_path / "utf16.toml"
    path.write_bytes(QUICKSTART.read_text(encoding="utf-8").encode("utf-16"))
    return [path]


def _deep_file(tmp_path: Path) -> list[Any]:
    path = tmp_path / "deep.toml"
    path.write_text(QUICKSTART.read_text().replace("hidden = [64]", "hidden = " + "[" * 2000 + "]" * 2000))
    return [path]


def _many_keys(tmp_path: Path) -> list[Any]:
    path = tmp_path / "keys.toml"
    path.write_text(QUICKSTART.read_text() + "".join(f"k{i} = {i}\n" for i in range(20_000)))
    return [path]


def _huge_value(tmp_path: Path) -> list[Any]:
    path = tmp_path / "huge.toml"
    path.write_text(QUICKSTART.read_text().replace('name = "quickstart"', f'name = "{"x" * 1_000_000}"'))
    return [path]


E2E: dict[str, Callable[[Path], list[Any]]] = {
    "latin-1 file": _latin1,
    "utf-16 file": _utf16,
    "nested 2,000 deep in the file": _deep_file,
    "20,000 unknown keys": _many_keys,
    "nested 2,000 deep in --set": lambda tmp: [QUICKSTART, "--set", "model.hidden=" + "[" * 2000 + "]" * 2000],
    "a 1 MB value in the file": _huge_value,
    "a 100 KB value in --set": lambda tmp: [QUICKSTART, "--set", "run.name=" + "x" * 100_000],
    "epochs = true": lambda tmp: [QUICKSTART, "--set", "trainer.epochs=true"],
    "lr = inf": lambda tmp: [QUICKSTART, "--set", "optimizer.lr=inf"],
    "best_metric nope": lambda tmp: [QUICKSTART, "--set", "trainer.best_metric=nope"],
}


@pytest.mark.parametrize("name", list(E2E))
def test_pipeforge_validate_refuses_with_exit_2_and_no_traceback(name, tmp_path):
    args = E2E[name](tmp_path)
    result = run_pipeforge("validate", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.encode()) < MESSAGE_LIMIT, len(result.stderr)
    assert str(args[0]) in result.stderr  # the recipe file, also when an override is the place
