"""JSON Schema (draft 2020-12) of recipes, covering every installed component's params.

Editors that read JSON Schema for TOML (e.g. Taplo / Even Better TOML) use it for completion
and inline errors. Each component table is an object whose `name` picks one registered
component; the other keys are that component's params, with unknown keys rejected.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pipeforge.version import __version__
from pipeforge.recipe import COMPONENT_TABLES, RunSection, SchedulerSpec, TrainerSection
from pipeforge.registry import KINDS, ComponentSpec, Registry, TransformSpec
from pipeforge.sweep_table import SweepSection

DRAFT = "https://json-schema.org/draft/2020-12/schema"
REF = "#/$defs/{model}"
# Component specs nested in params (e.g. a dataset's transform lists) point at their kind.
NESTED_SPECS: tuple[type[ComponentSpec], ...] = (TransformSpec,)


def recipe_schema(registry: Registry) -> dict[str, Any]:
    """The schema of a recipe given what `registry` holds."""
    components = registry.all_components()
    models: list[type[BaseModel]] = [RunSection, TrainerSection, SweepSection, *NESTED_SPECS]
    models += list({c.params: None for c in components})
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    defs: dict[str, Any] = top.get("$defs", {})

    def def_of(model: type[BaseModel]) -> dict[str, Any]:
        return defs[refs[(model, "validation")]["$ref"].rsplit("/", 1)[1]]

    # Keys a table of some kind has besides its component's params (a scheduler's interval, warm-up).
    own_keys = {"scheduler": {key: value for key, value in SchedulerSpec.model_json_schema()["properties"].items()
                              if key != "name"}}
    for kind in KINDS:
        branches = []
        for comp in (c for c in components if c.kind == kind):
            branch = copy.deepcopy(def_of(comp.params))
            branch["title"] = comp.name
            branch["description"] = comp.description
            branch.setdefault("properties", {})
            branch["properties"] = {"name": {"const": comp.name}, **own_keys.get(kind, {}), **branch["properties"]}
            branch["required"] = ["name", *branch.get("required", [])]
            branch["additionalProperties"] = False
            defs[f"{kind}:{comp.name}"] = branch
            branches.append({"$ref": f"#/$defs/{kind}:{comp.name}"})
        names = registry.names(kind)
        defs[f"kind:{kind}"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"enum": names} if names else {"type": "string"}},
            "anyOf": branches or [{"not": {}}],
        }
    for spec in NESTED_SPECS:
        def_of(spec).clear()
        def_of(spec)["$ref"] = f"#/$defs/kind:{spec.kind}"

    properties: dict[str, Any] = {
        "run": {"$ref": refs[(RunSection, "validation")]["$ref"]},
        "trainer": {"$ref": refs[(TrainerSection, "validation")]["$ref"]},
        "sweep": {"$ref": refs[(SweepSection, "validation")]["$ref"]},
    }
    for table, kind in COMPONENT_TABLES.items():
        item = {"$ref": f"#/$defs/kind:{kind}"}
        properties[table] = {"type": "array", "items": item} if table in ("metrics", "callbacks") else item
    return {
        "$schema": DRAFT,
        "title": f"pipeforge {__version__} recipe",
        "type": "object",
        "required": ["run", "dataset", "model", "optimizer"],
        "additionalProperties": False,
        "properties": properties,
        "$defs": defs,
    }
