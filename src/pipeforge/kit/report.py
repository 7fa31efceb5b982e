"""What `check-plugin` found: a `Finding` per thing checked, gathered in a `CheckReport`.

A finding names its component (kind and name; kind "plugin" for the plugin as a whole), so
that every line of the report says where to look. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeforge.registry import PluginInfo


@dataclass(frozen=True)
class Finding:
    """One thing found about one component (or, with kind "plugin", the plugin itself)."""

    kind: str
    name: str
    message: str

    @property
    def component(self) -> str:
        return f"{self.kind} '{self.name}'"

    def render(self) -> str:
        return f"{self.component}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "message": self.message}


@dataclass
class CheckReport:
    """The result of `check_plugin`: `problems` (the plugin breaks the contract: exit 1),
    `notes` (what could not be checked, and why) and `passed` (what was checked and held)."""

    plugin: PluginInfo
    source: Path | None = None
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    passed: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` shape of `pipeforge check-plugin`."""
        info = self.plugin
        return {
            "plugin": info.name, "distribution": info.distribution, "version": info.version,
            "module": info.module, "source": str(self.source) if self.source else None, "ok": self.ok,
            "problems": [f.to_json() for f in self.problems], "notes": [f.to_json() for f in self.notes],
            "passed": [f.to_json() for f in self.passed],
        }
