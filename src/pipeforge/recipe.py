"""Recipes: what a recipe holds, and validating it against the registry (`load_recipe` reads
the file and its includes through `compose`, applies `--set` overrides, then validates).

Validation happens in two passes and collects every problem before reporting: first the
recipe's own structure (`[run]`, `[trainer]`, which tables exist), then each component table
against the parameter model of the component it names. That second pass binds every table
(`ComponentSpec.bound`): the engine builds from, and `resolved()` writes, those validated params,
so each component's params are validated once per recipe. Nothing here imports torch.

Input is hostile until checked: a file in another encoding, arrays nested a thousand deep,
a megabyte value or twenty thousand bad items each give a `RecipeError` of a few lines that
names the place (file, line and column, dotted key, or `--set` text), never another exception.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Collection, TypeVar, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError

from pipeforge.compose import compose
from pipeforge.errors import Problem, RecipeError, UsageError, shorten
# Reading lives in recipe_file; apply_overrides and read_toml are imported from here too.
from pipeforge.recipe_file import MAX_DEPTH, TOO_DEEP, apply_overrides, read_toml  # noqa: F401
from pipeforge.registry import INT64_MAX, INT64_MIN, ComponentSpec, Registry
# The tables of pipeforge's own; RunSection and TrainerSection are imported from here too.
from pipeforge.sections import RunSection, SchedulerSpec, Section, TrainerSection, describe  # noqa: F401
from pipeforge.sweep_table import SweepSection

Table = TypeVar("Table", bound=BaseModel)

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


class Recipe(Section):
    """A whole recipe. Component tables hold `name` plus that component's params."""

    run: RunSection
    dataset: ComponentSpec
    model: ComponentSpec
    loss: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="cross_entropy"))
    optimizer: ComponentSpec
    scheduler: SchedulerSpec | None = None
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    metrics: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(name="accuracy")]
    )
    callbacks: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(name="tensorboard")]
    )
    sweep: SweepSection | None = Field(
        None, description="What `pipeforge sweep` varies (a grid or a search space), and how; "
        "`pipeforge run` trains the recipe as written and ignores it.",
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


# ------------------------------------------------------------------------------ validation


def load_recipe(path: Path, registry: Registry, overrides: list[str] | None = None,
                tables: Collection[str] | None = None) -> Recipe:
    """Read (with its includes, see `compose`), override and validate a recipe file. Raises
    `RecipeError` with every problem, each naming where its key was written. `tables` limits
    the component tables checked to those a command uses (see `validate_recipe`)."""
    composed = compose(path)
    try:
        composed.apply_overrides(list(overrides or []))
    except RecipeError as exc:  # the override is the place; the file says which recipe
        raise RecipeError(exc.problems, str(path)) from None
    try:
        return validate_recipe(composed.data, registry, source=str(path), tables=tables)
    except RecipeError as exc:  # each problem also names the file and line its key came from
        raise composed.locate(exc) from None


def validate_recipe(data: dict[str, Any], registry: Registry, source: str | None = None,
                    tables: Collection[str] | None = None) -> Recipe:
    """Validate parsed recipe data: its shape (nesting, 64-bit integers), its structure, then
    each component's params, binding every component table to its validated params, and last
    what depends on several tables (`trainer.best_metric`, a metric's `top_k`).

    With `tables` (e.g. `("dataset", "model")` for predict), only those component tables are
    checked and bound, so a finished run can be used without the plugins of the parts it no
    longer needs (its callbacks, its optimizer); the cross-table checks are left out."""
    if not isinstance(data, dict):
        raise RecipeError([Problem("", f"expected a table of tables, found {describe(data)}")], source)
    problems = check_shape(data)
    if problems:  # deeper checks would recurse through what is too deep
        raise RecipeError(problems, source)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, Recipe)
        # Component tables that did parse can still be checked, so all problems show at once.
        problems += _check_raw_components(data, registry, skip={p.path.split(".")[0] for p in problems})
        raise RecipeError(problems, source) from None
    problems = []
    for path, kind, spec in recipe.component_specs():
        if tables is None or path.split("[")[0] in tables:
            problems += check_spec(kind, spec, path, registry)
    if not problems and tables is None:
        problems = check_across(recipe)
    if problems:
        raise RecipeError(problems, source)
    return recipe


def check_shape(data: dict[str, Any]) -> list[Problem]:
    """What TOML itself rules out but Python's parser lets through: nesting deeper than
    `MAX_DEPTH`, integers beyond 64 bits. Walks without recursion, so any depth is safe."""
    problems: list[Problem] = []
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if len(loc) >= MAX_DEPTH:
                problems.append(Problem(_dotted(loc), TOO_DEEP))
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((item, [*loc, key]) for key, item in items)
        elif type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            problems.append(Problem(_dotted(loc), f"expected an integer within 64 bits (TOML's range), found {describe(value)}"))
    return sorted(problems, key=lambda p: p.path)


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
                spec = (SchedulerSpec if table == "scheduler" else ComponentSpec).model_validate(raw)
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
            message = f"no {kind} named '{shorten(spec.name)}' is registered"
        hint = hint or "run `pipeforge list-plugins` to see what is installed"
        return [Problem(f"{path}.name", message, hint)]
    try:
        params = component.params.model_validate(spec.params)
    except ValidationError as exc:
        return _problems(exc, component.params, prefix=path)
    spec.bind_validated(component, params)
    missing = component.missing_builder()
    if missing:
        owner = registry.owner(kind, spec.name)
        origin = f" (from {owner.distribution} {owner.version})" if owner else ""
        return [Problem(f"{path}.name", f"{kind} '{spec.name}'{origin} {missing}", "reinstall the plugin, "
                        "or run `pipeforge check-plugin` on it")]
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


# ------------------------------------------------------------------------------ across tables


def check_across(recipe: Recipe) -> list[Problem]:
    """Problems no single table shows, checked as far as the recipe alone tells: a
    `trainer.best_metric` the run will not write (its split is known only with
    `trainer.eval_splits`, its metric only when each metric's params have a `metric_name`), a
    metric's `top_k` above the classes of a dataset whose params give `classes`."""
    classes = _bound_param(recipe.dataset, "classes")
    names = [_bound_param(spec, "metric_name") for spec in recipe.metrics]
    return (_check_metric_names(recipe, names) + _check_best_metric(recipe, recipe.trainer.eval_splits, names)
            + _check_top_k(recipe, classes if type(classes) is int else None) + _check_metric_params(recipe))


def _check_metric_params(recipe: Recipe) -> list[Problem]:
    """Params marked `METRIC_KEY` (a callback's or a scheduler's `monitor`) that name a key the
    run will not write."""
    problems: list[Problem] = []
    specs = [(f"callbacks[{i}]", spec) for i, spec in enumerate(recipe.callbacks)] + [("scheduler", recipe.scheduler)]
    for path, spec in specs:
        if spec is None or spec.bound is None:
            continue
        params = spec.bound.params
        for field, info in type(params).model_fields.items():
            marked = isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("metric_key")
            if marked and isinstance(value := getattr(params, field), str):
                problems += check_metric_key(recipe, value, f"{path}.{field}")
    return problems


def _check_metric_names(recipe: Recipe, names: list[str | None]) -> list[Problem]:
    """Two metrics recording one key (the same component with the same params, or the same
    `metric_name`), or a metric recording `<split>_loss`, would overwrite a value silently."""
    problems: list[Problem] = []
    seen: dict[Any, int] = {}
    for index, (spec, name) in enumerate(zip(recipe.metrics, names)):
        if name == "loss":
            problems.append(Problem(f"metrics[{index}]", "this metric records '<split>_loss', which the "
                                                         "engine writes itself"))
        params = spec.bound.params.model_dump(mode="json") if spec.bound is not None else spec.params
        key = ("name", name) if isinstance(name, str) else ("spec", spec.name, repr(sorted(params.items())))
        if key in seen:
            problems.append(Problem(f"metrics[{index}]", f"records the same key as metrics[{seen[key]}] "
                                                         f"('<split>_{name or spec.name}'); remove one"))
        seen.setdefault(key, index)
    return problems


def check_against_data(recipe: Recipe, splits: list[str], num_classes: int | None,
                       metric_names: list[str]) -> None:
    """The checks of `check_across` once the data is built and says what only it knows: the
    splits evaluated, the classes, each metric's name. Raises `UsageError` naming the recipe
    key of each problem (e.g. `trainer.best_metric`)."""
    problems = _check_best_metric(recipe, splits, list(metric_names)) + _check_top_k(recipe, num_classes)
    if problems:
        raise UsageError("\n".join(problem.render() for problem in problems))


def metric_keys(splits: list[str], metric_names: list[str]) -> list[str]:
    """The keys of metrics.jsonl a run evaluating `splits` writes: `train_loss`, then
    `<split>_loss` and `<split>_<metric>` for each split (`train_eval_…` for the training one)."""
    keys = ["train_loss"]
    for split in splits:
        prefix = "train_eval" if split == "train" else split
        keys += [f"{prefix}_loss", *(f"{prefix}_{name}" for name in metric_names)]
    return keys


def check_metric_key(recipe: Recipe, key: str, path: str) -> list[Problem]:
    """Problems, at `path`, if `key` is not a metrics.jsonl key that a run of `recipe` writes
    (checked as far as the recipe tells, as for `trainer.best_metric`)."""
    names = [_bound_param(spec, "metric_name") for spec in recipe.metrics]
    return _check_best_metric(recipe, recipe.trainer.eval_splits, names, wanted=key, path=path)


def _check_best_metric(recipe: Recipe, splits: list[str] | None, names: list[str | None],
                       wanted: str | None = None, path: str = "trainer.best_metric") -> list[Problem]:
    wanted = wanted if wanted is not None else recipe.trainer.best_metric
    known = [name for name in names if isinstance(name, str)]
    if wanted is None or len(known) < len(names) and splits is None:
        return []
    if len(known) == len(names) and splits is not None:
        keys = metric_keys(splits, known)
        fits, expected = wanted in keys, ", ".join(keys)
    elif splits is not None:  # a metric of unknown name: check the split part only
        keys = [key.removesuffix("loss") for key in metric_keys(splits, [])]
        fits, expected = wanted.startswith(tuple(keys)), " or ".join(f"{key}<metric>" for key in keys)
    else:  # the splits come from the dataset: check the metric part only
        suffixes = [f"_{suffix}" for suffix in ("loss", *known)]
        keys = [wanted.split("_", 1)[0] + suffix for suffix in suffixes]
        fits = any(wanted.endswith(suffix) and len(wanted) > len(suffix) for suffix in suffixes)
        expected = " or ".join(f"<split>{suffix}" for suffix in suffixes)
    if fits:
        return []
    message = f"expected a key the run writes ({expected}), found {describe(wanted)}"
    return [Problem(path, message, did_you_mean(wanted, keys))]


def _check_top_k(recipe: Recipe, classes: int | None) -> list[Problem]:
    problems: list[Problem] = []
    for index, spec in enumerate(recipe.metrics):
        top_k = _bound_param(spec, "top_k")
        if classes is not None and type(top_k) is int and top_k > classes:
            message = f"expected at most {classes} (the dataset has {classes} classes), found {top_k}"
            problems.append(Problem(f"metrics[{index}].top_k", message))
    return problems


def _bound_param(spec: ComponentSpec | None, name: str) -> Any:
    bound = spec.bound if spec is not None else None
    return getattr(bound.params, name, None) if bound is not None else None


def did_you_mean(word: str, candidates: list[str]) -> str | None:
    """"did you mean 'x'?" for the candidate closest to `word`, if one is close."""
    if len(word) > 200:  # no name is that long, and comparing costs its length squared
        return None
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


# pydantic says "Input should be …"; we say what was expected, then what was found.
_EXPECTED = (
    ("Input should be greater", "expected a value greater"),
    ("Input should be less", "expected a value less"),
    ("Input should have", "expected an array with"),
    ("Input should be ", "expected "),
    ("String should match pattern", "expected a string matching the pattern"),
    ("String should have", "expected a string with"),
    ("List should have", "expected an array with"),
)

def validate_table(model: type[Table], data: Any, path: str) -> Table:
    """Validate one table of the recipe with its model (e.g. `[sweep]`); `RecipeError` whose
    problems are placed under `path`, worded as the recipe validator words them."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_problems(exc, model, prefix=path)) from None


def _problems(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[Problem]:
    # A message shows a few problems: suggesting a key for each of 20,000 would take seconds.
    return [_problem(err, model, prefix, hint=i < 100) for i, err in enumerate(exc.errors())]


def _problem(error: dict[str, Any], model: type[BaseModel], prefix: str = "", hint: bool = True) -> Problem:
    """Turn one pydantic error into a Problem with a dotted path and (if `hint`) a 'did you mean'."""
    loc = [part for part in error["loc"]]
    path = _dotted([prefix, *loc] if prefix else loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1]) if hint else []
        suggestion = did_you_mean(str(loc[-1]), allowed) if allowed else None
        if suggestion is None and allowed:
            suggestion = f"allowed keys: {', '.join(allowed)}"
        return Problem(path, f"unknown key (found {describe(error['input'])})", suggestion)
    if kind == "missing":
        return Problem(path, "required key is missing")
    if kind == "value_error":  # a validator's own words, which say what they found
        return Problem(path, error["msg"].removeprefix("Value error, "))
    expected = error["msg"]
    for pydantic_words, ours in _EXPECTED:
        expected = expected.replace(pydantic_words, ours)
    return Problem(path, f"{expected}, found {describe(error['input'])}")


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
    own = {key: getattr(spec, key) for key in type(spec).model_fields if key != "name"}  # e.g. interval
    return {"name": spec.name, **{k: v for k, v in own.items() if v is not None},
            **spec.bound.params.model_dump(mode="json", exclude_none=True)}
