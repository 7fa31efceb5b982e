"""Discovery: find installed plugins, load each on its own, and fill the component registry.

pluggy's own entry-point loader stops at the first plugin that fails to import and silently
keeps the first of two same-named entry points. We load each entry point separately instead:
a plugin that fails to import or register is marked broken (with its distribution and error)
and the rest keep working; a name claimed twice is a conflict naming both claimants. A hook
implementation whose name is no pipeforge hook (a typo, or a hook of an earlier version) is an
error naming the plugin and the closest real hook, never silently ignored; `register` applies
the same check to the callback objects a run registers.

A plugin's import is code we do not control: `sys.exit()`, a `KeyboardInterrupt` it raises
itself, or any other exception marks it broken (only a real Ctrl-C still stops discovery), and
what it prints while loading goes to stderr, so that stdout (`list-plugins --json`) stays ours.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import re
import signal
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Iterable, Iterator

import pluggy
from pydantic import BaseModel

from pipeforge import hookspecs
from pipeforge.contract import HOOKS, Callback, overridden_hooks
from pipeforge.errors import PluginError
from pipeforge.registry import KINDS, Component, PluginInfo, Registry

ENTRY_POINT_GROUP = "pipeforge"
CORE_DISTRIBUTION = "pipeforge"


@dataclass
class Plugins:
    """The result of discovery: the hook caller and the registry it filled."""

    manager: pluggy.PluginManager
    registry: Registry

    @property
    def broken(self) -> list[PluginInfo]:
        return [p for p in self.registry.plugins if p.status != "ok"]


class _Manager(pluggy.PluginManager):
    """pluggy's manager, which also takes the hooks a `pipeforge.Callback` subclass overrides as
    implementations, with no `@hookimpl` marker needed."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and isinstance(plugin, Callback) and name in overridden_hooks(plugin):
            return pluggy.HookimplOpts(wrapper=False, hookwrapper=False, optionalhook=False,
                                       tryfirst=False, trylast=False, specname=None)
        return opts


def new_manager() -> pluggy.PluginManager:
    """A plugin manager that knows pipeforge's hook specs and has no plugins yet."""
    manager = _Manager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def discover(entry_points: Iterable[metadata.EntryPoint] | None = None) -> Plugins:
    """Load every plugin in the `pipeforge` entry-point group and register its components.

    Never raises for a bad plugin: its `PluginInfo.status` becomes "broken" or "conflict" with
    the reason in `error`, and callers decide how to report it.
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    manager = new_manager()
    registry = Registry()
    by_name: dict[str, list[metadata.EntryPoint]] = {}
    for ep in entry_points:
        by_name.setdefault(ep.name, []).append(ep)
    with _ctrl_c_watched() as ctrl_c, contextlib.redirect_stdout(sys.stderr):
        for name in sorted(by_name):
            claims = by_name[name]
            infos = [_plugin_info(ep) for ep in claims]
            registry.plugins.extend(infos)
            if len(claims) > 1:
                # Loading either would make it a silent winner; neither is loaded.
                who = " and ".join(f"{i.distribution} {i.version}" for i in infos)
                for info in infos:
                    info.status = "conflict"
                    info.error = f"plugin name '{name}' is claimed by both {who}; uninstall one"
                continue
            _load(claims[0], infos[0], manager, registry, ctrl_c)
    return Plugins(manager=manager, registry=registry)


def _plugin_info(ep: metadata.EntryPoint) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None else "(unknown distribution)"
    version = dist.version if dist is not None else "?"
    return PluginInfo(name=ep.name, distribution=name, version=version, module=ep.value)


def _load(
    ep: metadata.EntryPoint, info: PluginInfo, manager: pluggy.PluginManager, registry: Registry,
    ctrl_c: list[int],
) -> None:
    """Import and register one plugin; on any failure mark `info` broken and register nothing.

    Re-raises only a `KeyboardInterrupt` that a real SIGINT caused (`ctrl_c` is not empty)."""
    try:
        module = ep.load()
        register(manager, module, f"plugin '{ep.name}'", name=ep.name)
        components = _collect(manager, ep.name)
        for component in components:
            _check(component, info)
    except BaseException as exc:  # a plugin's failure, even sys.exit(), must not take the others down
        if isinstance(exc, KeyboardInterrupt) and ctrl_c:
            raise
        if manager.has_plugin(ep.name):
            manager.unregister(name=ep.name)
        info.status = "broken"
        info.error = _describe(exc)
        return
    info.components = components
    for component in components:
        registry.add(component, info)


@contextlib.contextmanager
def _ctrl_c_watched() -> Iterator[list[int]]:
    """Note each SIGINT that arrives inside the block in the yielded list, and handle it as
    before, so that a `KeyboardInterrupt` a plugin raises itself can be told from the user's
    Ctrl-C. Off the main thread, or when SIGINT is ignored or not Python's, no signal can
    raise there, so the list stays empty."""
    seen: list[int] = []
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if not callable(previous):
        yield seen
        return

    def note(signum: int, frame: object) -> None:
        seen.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def register(manager: pluggy.PluginManager, plugin: object, label: str, name: str | None = None) -> None:
    """Register `plugin`'s hook implementations; `PluginError` naming `label` when one has no
    matching hook or takes an argument its hook does not have."""
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{label}: {_reason(exc)}") from None
    wrong = [caller.name for caller in manager.get_hookcallers(plugin) or [] if caller.spec is None]
    if isinstance(plugin, Callback):  # unmarked methods: a misspelled hook would be skipped
        wrong += [name for name in dir(type(plugin)) if name.startswith("on_") and name not in HOOKS]
    if wrong:
        manager.unregister(plugin)
        raise PluginError(f"{label}: " + "; ".join(_unknown_hook(hook) for hook in sorted(wrong)))


def _unknown_hook(hook: str) -> str:
    if hook in hookspecs.REMOVED_HOOKS:
        return f"implements '{hook}', which pipeforge no longer calls: {hookspecs.REMOVED_HOOKS[hook]}"
    known = sorted(name for name in vars(hookspecs) if hasattr(getattr(hookspecs, name), "pipeforge_spec"))
    close = difflib.get_close_matches(hook, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"the hooks are: {', '.join(known)}"
    return f"'{hook}' is not a pipeforge hook; {hint}"


def _reason(exc: pluggy.PluginValidationError) -> str:
    """pluggy names a plugin object by its id; say which hook and which arguments it passes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = re.search(r"for hook '(\w+)'", lines[0]) if lines else None
    spec = getattr(hookspecs, found.group(1), None) if found else None
    if spec is None:
        return " ".join(lines)
    passed = ", ".join(inspect.signature(spec).parameters)
    return f"{lines[-1]} ('{found.group(1)}' passes only: {passed or 'nothing'})"


def _describe(exc: BaseException) -> str:
    """`SystemExit: 3`, `KeyboardInterrupt`: the error's type and the start of its message."""
    text = " ".join(str(exc).split())
    if len(text) > 500:  # a plugin's message can be any size; a warning stays a line or two
        text = text[:499] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _collect(manager: pluggy.PluginManager, plugin_name: str) -> list[Component]:
    components: list[Component] = []
    for impl in manager.hook.register_components.get_hookimpls():
        if impl.plugin_name == plugin_name:
            components.extend(impl.function() or [])
    return components


def _check(component: object, info: PluginInfo) -> None:
    """Reject a malformed registration with a message a plugin author can act on."""
    if not isinstance(component, Component):
        raise TypeError(f"register_components returned {component!r}, not a pipeforge.Component")
    if component.kind not in KINDS:
        raise ValueError(
            f"component '{component.name}' has kind '{component.kind}'; "
            f"expected one of {', '.join(KINDS)}"
        )
    if not (isinstance(component.params, type) and issubclass(component.params, BaseModel)):
        raise TypeError(f"component '{component.name}': params must be a pipeforge.Params class")
    if info.distribution != CORE_DISTRIBUTION and not component.name.startswith(f"{info.name}."):
        raise ValueError(
            f"component '{component.name}' must be namespaced by its plugin name "
            f"('{info.name}.{component.name.split('.')[-1]}')"
        )
