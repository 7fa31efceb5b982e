"""Components: the named, typed building blocks a recipe can ask for.

A plugin returns `Component` objects from its `register_components` hook. Each one has a kind
(model, dataset, …), a name, a pydantic parameter model and a builder. The `Registry` maps
(kind, name) to exactly one component; a name claimed by two distributions is a conflict that
names both, never a silent winner. Nothing here imports torch: builders may be given as
"module:function" strings so that listing and validating never load the code that builds.

Validating a recipe binds each of its component tables (`ComponentSpec`) to a `Bound`: the
component it names and its params, validated once; building and writing the resolved recipe
use that, so a mistake in a table is found, and reported with its recipe location, only there.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, ClassVar

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from pipeforge.errors import PluginError

KINDS: tuple[str, ...] = (
    "model",
    "dataset",
    "loss",
    "optimizer",
    "scheduler",
    "metric",
    "callback",
    "transform",
)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Marks a param that names a metrics.jsonl key (e.g. a callback's `monitor`):
# `monitor: str = Field("val_loss", json_schema_extra=METRIC_KEY)`. `validate` then checks the
# key against what the run will write, as it does `trainer.best_metric`.
METRIC_KEY: dict[str, Any] = {"metric_key": True}

# For a plain pydantic model (a `Params` subclass is already strict and finite): a float that
# is neither inf nor nan, and an integer that TOML (64-bit) and torch can hold.
FiniteFloat = Annotated[float, AllowInfNan(False)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


class Params(BaseModel):
    """Base class for a component's parameters, as strict as TOML is typed.

    - Unknown keys are an error, never ignored.
    - Types are strict: a boolean is not a number and a string is not a number (`lr = true`
      and `epochs = "5"` are refused); an integer is accepted where a float is expected, since
      TOML writes `lr = 1`.
    - Floats are finite: inf and nan are refused everywhere (use `Field(ge=…, le=…)` for the
      rest of a bound; the recipe validator also refuses integers beyond 64 bits).
    - A metric's params may define a `metric_name` property: the key suffix it reports under
      (`val_<metric_name>`), so that `validate` can check `trainer.best_metric` before a run.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)


class NoParams(Params):
    """For components that take no parameters."""


class ComponentSpec(BaseModel):
    """A reference to a registered component inside another component's params.

    `name` picks the component; every other key is that component's params, validated by the
    recipe validator against the component's own model. Subclasses set `kind`, e.g.
    `TransformSpec` for lists of transforms in a dataset's params.
    """

    model_config = ConfigDict(extra="allow")
    kind: ClassVar[str] = ""
    name: str
    _bound: Bound | None = PrivateAttr(default=None)

    @property
    def params(self) -> dict[str, Any]:
        """The table's params as written (unvalidated); `bound.params` is the validated form."""
        return dict(self.model_extra or {})

    @property
    def bound(self) -> Bound | None:
        """The component and validated params, once the recipe validator has checked this table."""
        return self._bound

    def bind(self, registry: Registry, kind: str) -> Bound:
        """Validate this table against the registered `kind` component it names and keep the
        result. Raises `PluginError` (unknown name, invalid params) for a table a plugin made;
        the recipe validator checks recipe tables itself, to report their location."""
        component = registry.get(kind, self.name)
        try:
            params = component.params.model_validate(self.params)
        except ValidationError as exc:
            raise PluginError(f"{kind} '{self.name}': invalid params: {exc}") from None
        self._bound = Bound(component, params)
        return self._bound

    def bind_validated(self, component: Component, params: BaseModel) -> None:
        """Record a validation the recipe validator made."""
        self._bound = Bound(component, params)


class TransformSpec(ComponentSpec):
    """A registered transform with its params, e.g. `{name = "resize", size = [64, 64]}`."""

    kind: ClassVar[str] = "transform"


Builder = Callable[..., Any]
# Builder modules found installed in this process (only found ones: a missing one is looked up again).
_FOUND_MODULES: set[str] = set()


@dataclass(frozen=True)
class Component:
    """A named component of one kind.

    - `kind`: one of `KINDS`.
    - `name`: what a recipe writes in `name = "…"`; third-party names are namespaced by the
      plugin's entry-point name (`popularity.simplenet`), built-ins may be bare (`sgd`).
    - `params`: a `Params` subclass; its field descriptions are shown by `pipeforge show`.
    - `build`: a callable `build(params, context)` or a lazy "module:function" reference to one.
    - `description`: one line for `list-plugins` and `show`.
    - `read_inputs` (datasets only, optional): a callable `read_inputs(params, inputs, context)`
      or a "module:function" reference, used by `pipeforge predict` to turn its INPUT
      arguments into one batch for the model; see `hookspecs.py` for the contract.
    - `unchecked` (optional): why `pipeforge check-plugin` cannot build this component on its
      own small data (e.g. it needs a model of a special kind, or exists only to refuse a use
      with a clear reason); the check reports that reason as a note instead of building it.
    """

    kind: str
    name: str
    params: type[BaseModel]
    build: Builder | str
    description: str = ""
    read_inputs: Builder | str | None = None
    unchecked: str | None = None

    def builder(self) -> Builder:
        """Resolve `build` to a callable, importing its module if it was given lazily."""
        return self._resolve(self.build, "builder")

    def missing_builder(self) -> str | None:
        """Why a lazy "module:function" builder cannot load, checked without running the module
        (its package's `__init__` runs): its module is not installed, or the reference is not
        "module:function". None when it looks loadable; `check-plugin` imports it for real."""
        if callable(self.build):
            return None
        module_name, sep, attr = self.build.partition(":")
        if not sep or not module_name or not attr.isidentifier():
            return f"its builder '{self.build}' is not a \"module:function\" reference"
        if module_name in _FOUND_MODULES:  # a sweep validates the same recipe a thousand times
            return None
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError) as exc:
            found, why = None, f"{type(exc).__name__}: {exc}"
        else:
            why = "no such module is installed"
        if found is not None:
            _FOUND_MODULES.add(module_name)
        return None if found is not None else f"cannot load its builder '{self.build}': {why}"

    def reader(self) -> Builder | None:
        """Resolve `read_inputs` like `builder`; None when the component has no input reader."""
        return None if self.read_inputs is None else self._resolve(self.read_inputs, "input reader")

    def _resolve(self, ref: Builder | str, role: str) -> Builder:
        if callable(ref):
            return ref
        module_name, _, attr = ref.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{self.kind} '{self.name}': cannot load its {role} '{ref}': "
                f"{type(exc).__name__}: {exc}"
            ) from exc


@dataclass(frozen=True)
class Bound:
    """A component table after validation: the component it names and its params instance."""

    component: Component
    params: BaseModel

    def build(self, context: Any) -> Any:
        """Call the component's builder with the validated params and a `BuildContext`."""
        return self.component.builder()(self.params, context)


@dataclass
class PluginInfo:
    """One installed plugin (an entry point in the `pipeforge` group) and how loading went."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "ok"  # "ok" | "broken" | "conflict"
    error: str | None = None
    components: list[Component] = field(default_factory=list)

    def components_by_kind(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for comp in self.components:
            grouped.setdefault(comp.kind, []).append(comp.name)
        return grouped


class Registry:
    """(kind, name) → Component, plus which plugin owns each name and what failed to load."""

    def __init__(self) -> None:
        self._components: dict[tuple[str, str], Component] = {}
        self._owners: dict[tuple[str, str], PluginInfo] = {}
        self._conflicts: dict[tuple[str, str], list[PluginInfo]] = {}
        self.plugins: list[PluginInfo] = []

    def add(self, component: Component, owner: PluginInfo) -> None:
        """Register `component` for `owner`; a second claim on a name makes it a conflict."""
        key = (component.kind, component.name)
        if key in self._components:
            self._conflicts[key] = [self._owners.pop(key)]
            del self._components[key]
        if key in self._conflicts:
            claimants = self._conflicts[key]
            claimants.append(owner)
            who = " and ".join(p.distribution for p in claimants)
            for plugin in claimants:
                plugin.status = "conflict"
                plugin.error = f"{component.kind} '{component.name}' is registered by both {who}"
            return
        self._components[key] = component
        self._owners[key] = owner

    def names(self, kind: str) -> list[str]:
        """Every usable name of a kind, sorted."""
        return sorted(name for (k, name) in self._components if k == kind)

    def find(self, kind: str, name: str) -> Component | None:
        return self._components.get((kind, name))

    def owner(self, kind: str, name: str) -> PluginInfo | None:
        return self._owners.get((kind, name))

    def conflict(self, kind: str, name: str) -> list[PluginInfo] | None:
        return self._conflicts.get((kind, name))

    def all_components(self) -> list[Component]:
        return [self._components[k] for k in sorted(self._components)]

    def get(self, kind: str, name: str) -> Component:
        """The component, or a `PluginError` that says why it cannot be used."""
        found = self.find(kind, name)
        if found is not None:
            return found
        raise PluginError(self.why_missing(kind, name))

    def why_missing(self, kind: str, name: str) -> str:
        """Explain an unknown name: a conflict, a broken plugin that would own it, or nothing."""
        claimants = self.conflict(kind, name)
        if claimants:
            who = " and ".join(f"{p.distribution} (plugin '{p.name}')" for p in claimants)
            return f"{kind} '{name}' is registered by both {who}; uninstall one of them"
        namespace = name.split(".", 1)[0] if "." in name else None
        for plugin in self.plugins:
            if plugin.status != "ok" and plugin.name == namespace and plugin.error:
                return (
                    f"{kind} '{name}' belongs to plugin '{plugin.name}' from "
                    f"{plugin.distribution} {plugin.version}, which is {plugin.status}: {plugin.error}"
                )
        return f"no {kind} named '{name}' is registered"
