"""Recipes: read a TOML file, apply `--set` overrides, and validate it against the registry.

Validation happens in two passes and collects every problem before reporting: first the
recipe's own structure (`[run]`, `[trainer]`, which tables exist), then each component table
against the parameter model of the component it names. That second pass binds every table
(`ComponentSpec.bound`): the engine builds from, and `resolved()` writes, those validated params,
so each component's params are validated once per recipe. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeforge.errors import Problem, RecipeError
from pipeforge.registry import ComponentSpec, Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Which registry kind each recipe table names.
COMPONENT_TABLES: dict[str, str] = {
    "dataset": "dataset",
    "model": "model",
    "loss": "loss",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "metrics": "metric",
    "callbacks": "callback",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSection(Section):
    """`[run]`: what the run is called and how it is seeded."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Run name; the default run dir is runs/<name>-<timestamp>/.",
    )
    seed: int = Field(0, description="Seeds python, numpy and torch, and the data order.")


class TrainerSection(Section):
    """`[trainer]`: how the loop runs."""

    epochs: int = Field(1, ge=1, description="Training epochs.")
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    eval_batch_size: int | None = Field(
        None, ge=1, description="Batch size for evaluation; defaults to batch_size."
    )
    shuffle: bool = Field(True, description="Reshuffle the training split every epoch.")
    drop_last: bool = Field(False, description="Drop the last incomplete training batch.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='"auto" uses CUDA when it is available, else the CPU.'
    )
    num_workers: int | Literal["auto"] = Field(
        "auto", description='DataLoader worker processes per split, for datasets that are not '
        'in-memory tensors; "auto": one less than the CPUs (at most 4). Bitwise-exact resume of '
        "randomly augmented data needs 0.",
    )
    eval_splits: list[str] | None = Field(
        None, description="Splits evaluated after each epoch; default: every split but train."
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N optimizer steps (besides the epoch-end checkpoints)."
    )
    checkpoint_every_epochs: int = Field(
        1, ge=0, description="Checkpoint every N epochs and after the last one (0: only after the "
        "last); best.pt is chosen among the checkpointed epochs. Raise it for short epochs, where "
        "writing checkpoints takes a large share of the time.",
    )
    keep_checkpoints: int = Field(2, ge=1, description="Step checkpoints kept (plus best.pt).")
    best_metric: str | None = Field(
        None, description='Metric that picks best.pt, e.g. "val_accuracy"; default: the first '
        "evaluated split's loss. Losses are minimised, everything else maximised.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description='"bf16" runs forward passes under torch.autocast in bfloat16.'
    )
    channels_last: bool = Field(False, description="Use channels-last memory format for 4-d inputs.")
    compile: bool = Field(
        False, description="torch.compile the model (costs start-up time; pays off on long runs)."
    )
    strategy: Literal["auto", "ddp", "none"] = Field(
        "auto", description='"auto": data-parallel (DDP) when launched by torchrun with WORLD_SIZE > 1; '
        '"ddp": require such a launch; "none": refuse one. batch_size is per process.',
    )
    dist_timeout_s: float = Field(
        300.0, gt=0, description="Seconds a collective may wait for other ranks before the job fails."
    )


class Recipe(Section):
    """A whole recipe. Component tables hold `name` plus that component's params."""

    run: RunSection
    dataset: ComponentSpec
    model: ComponentSpec
    loss: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="cross_entropy"))
    optimizer: ComponentSpec
    scheduler: ComponentSpec | None = None
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    metrics: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(name="accuracy")]
    )
    callbacks: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(name="tensorboard")]
    )

    def component_specs(self) -> list[tuple[str, str, ComponentSpec]]:
        """(dotted path, kind, spec) for every component the recipe names."""
        found: list[tuple[str, str, ComponentSpec]] = []
        for table, kind in COMPONENT_TABLES.items():
            value = getattr(self, table)
            if isinstance(value, list):
                found.extend((f"{table}[{i}]", kind, spec) for i, spec in enumerate(value))
            elif value is not None:
                found.append((table, kind, value))
        return found

    @property
    def is_bound(self) -> bool:
        """Whether the recipe validator has bound every component table (see `validate_recipe`)."""
        return all(spec.bound is not None for _, _, spec in self.component_specs())


# ------------------------------------------------------------------------------ reading


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a recipe file; a missing file or a TOML syntax error is a `RecipeError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError([Problem("", f"cannot read recipe: {exc.strerror}")], str(path)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([Problem("", f"not valid TOML: {exc}")], str(path)) from exc


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b=VALUE` into its key path and VALUE, read as TOML (else kept as a string)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise RecipeError(
            [Problem(f"--set {text}", "expected KEY=VALUE with a dotted KEY, e.g. optimizer.lr=0.1")]
        )
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [p.strip() for p in parts], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply each `--set` to the parsed recipe in place; integer keys index arrays."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
            else:
                where = ".".join(parts[:depth]) or "(top)"
                raise RecipeError([Problem(f"--set {text}", f"'{where}' is not a table")])
            if last:
                node[index] = value
            else:
                if isinstance(node, dict) and index not in node:
                    node[index] = {}
                node = node[index]
    return data


# ------------------------------------------------------------------------------ validation


def load_recipe(path: Path, registry: Registry, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file. Raises `RecipeError` with every problem."""
    data = apply_overrides(read_toml(path), list(overrides or []))
    return validate_recipe(data, registry, source=str(path))


def validate_recipe(data: dict[str, Any], registry: Registry, source: str | None = None) -> Recipe:
    """Validate parsed recipe data: its structure, then each component's params, binding every
    component table to its validated params."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err, Recipe) for err in exc.errors()]
        # Component tables that did parse can still be checked, so all problems show at once.
        problems += _check_raw_components(data, registry, skip={p.path.split(".")[0] for p in problems})
        raise RecipeError(problems, source) from None
    problems = []
    for path, kind, spec in recipe.component_specs():
        problems += check_spec(kind, spec, path, registry)
    if problems:
        raise RecipeError(problems, source)
    return recipe


def _check_raw_components(data: dict[str, Any], registry: Registry, skip: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    for table, kind in COMPONENT_TABLES.items():
        value = data.get(table)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, raw in items:
            path = table if index is None else f"{table}[{index}]"
            if table in skip or path in skip or not isinstance(raw, dict) or "name" not in raw:
                continue
            try:
                spec = ComponentSpec.model_validate(raw)
            except ValidationError:
                continue
            problems += check_spec(kind, spec, path, registry)
    return problems


def check_spec(kind: str, spec: ComponentSpec, path: str, registry: Registry) -> list[Problem]:
    """Problems with one component table: an unknown name, or params that do not validate."""
    component = registry.find(kind, spec.name)
    if component is None:
        hint = did_you_mean(spec.name, registry.names(kind))
        if registry.conflict(kind, spec.name) or "." in spec.name:
            message = registry.why_missing(kind, spec.name)
        else:
            message = f"no {kind} named '{spec.name}' is registered"
        hint = hint or "run `pipeforge list-plugins` to see what is installed"
        return [Problem(f"{path}.name", message, hint)]
    try:
        params = component.params.model_validate(spec.params)
    except ValidationError as exc:
        return [_problem(err, component.params, prefix=path) for err in exc.errors()]
    spec.bind_validated(component, params)
    return _check_nested(params, path, registry)


def _check_nested(params: BaseModel, path: str, registry: Registry) -> list[Problem]:
    """Validate component specs inside params (e.g. a dataset's list of transforms)."""
    problems: list[Problem] = []
    for field_name in type(params).model_fields:
        value = getattr(params, field_name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, ComponentSpec) and item.kind:
                where = f"{path}.{field_name}" + (f"[{index}]" if index is not None else "")
                problems += check_spec(item.kind, item, where, registry)
    return problems


def did_you_mean(word: str, candidates: list[str]) -> str | None:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


# pydantic says "Input should be …"; we say what was expected, then what was found.
_EXPECTED = (
    ("Input should be greater", "expected a value greater"),
    ("Input should be less", "expected a value less"),
    ("Input should have", "expected an array with"),
    ("Input should be ", "expected "),
    ("String should match pattern", "expected a string matching the pattern"),
)

_TOML_TYPES = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}


def _describe(value: Any) -> str:
    kind = _TOML_TYPES.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, (dict, list)) else kind
    return shown if shown == kind else f"{shown} ({kind})"


def _problem(error: dict[str, Any], model: type[BaseModel], prefix: str = "") -> Problem:
    """Turn one pydantic error into a Problem with a dotted path and a 'did you mean'."""
    loc = [part for part in error["loc"]]
    path = _dotted([prefix, *loc] if prefix else loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), allowed) if allowed else None
        if hint is None and allowed:
            hint = f"allowed keys: {', '.join(allowed)}"
        return Problem(path, f"unknown key (found {_describe(error['input'])})", hint)
    if kind == "missing":
        return Problem(path, "required key is missing")
    expected = error["msg"].replace("Value error, ", "")
    for pydantic_words, ours in _EXPECTED:
        expected = expected.replace(pydantic_words, ours)
    return Problem(path, f"{expected}, found {_describe(error['input'])}")


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if part == "":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """The field names of the model found by walking `loc` down from `model`."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) else ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# ------------------------------------------------------------------------------ resolved form


def resolved(recipe: Recipe) -> dict[str, Any]:
    """The recipe with every default filled in, ready to be written as `recipe.toml`.

    `recipe` must come from `validate_recipe`: the defaults are those of its bound params."""
    out: dict[str, Any] = {
        "run": recipe.run.model_dump(mode="json"),
        "trainer": recipe.trainer.model_dump(mode="json", exclude_none=True),
    }
    for table in COMPONENT_TABLES:
        value = getattr(recipe, table)
        if value is None:
            continue
        specs = value if isinstance(value, list) else [value]
        dumped = [_resolved_spec(spec) for spec in specs]
        out[table] = dumped if isinstance(value, list) else dumped[0]
    return out


def _resolved_spec(spec: ComponentSpec) -> dict[str, Any]:
    if spec.bound is None:
        raise ValueError(f"component '{spec.name}' was not validated; use validate_recipe()")
    return {"name": spec.name, **spec.bound.params.model_dump(mode="json", exclude_none=True)}
