"""The `pipeforge` command: its entry point, parser and the control-plane commands (validate,
list-plugins, show, schema); `cli_run` and `cli_inference` add theirs. The CLI owns the
console: everything a user reads is printed by these modules (see `cli_common`).

Exit codes: 0 ok; 1 failure at run time; 2 usage, recipe or plugin error; 130 on Ctrl-C.
The control plane (help, validate, list-plugins, show, schema, runs, compare) never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Callable, Literal, Union, get_args, get_origin

import tomli_w
from rich.table import Table
from rich.text import Text

from pipeforge.version import __version__
from pipeforge.cli_common import discover_plugins, error, out
from pipeforge.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, PipeforgeError, UsageError
from pipeforge.kit.check import requirement_findings
from pipeforge.recipe import did_you_mean, load_recipe, resolved
from pipeforge.registry import KINDS


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code."""
    code = _main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "torch.distributed" in sys.modules:
        # A rank of a torchrun job: the process group is gone and every file is written, but
        # torch's communication threads can still abort the interpreter's own teardown
        # ("terminate called without an active exception"), so leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    try:
        return args.command(args)
    except PipeforgeError as exc:
        # Under torchrun every rank sees the same bad input; rank 0 says it once.
        if rank == 0 or exc.exit_code != EXIT_USAGE:
            error(str(exc) if rank == 0 else f"[rank {rank}] {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # an unexpected failure: one line, the traceback behind --debug
        if args.debug:
            raise
        where = f"[rank {rank}] " if rank else ""
        error(f"{where}{type(exc).__name__}: {exc}\n(run again with --debug for the traceback)")
        return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeforge", description="Declarative, plugin-based training for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"pipeforge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command=func)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sub

    def recipe_args(sub: argparse.ArgumentParser, optional: bool = False) -> None:
        sub.add_argument("recipe", type=Path, help="recipe TOML file", nargs="?" if optional else None)
        sub.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a recipe value, e.g. --set optimizer.lr=0.1 (VALUE is read as TOML, "
            "else as a string); repeatable",
        )

    from pipeforge import cli_inference, cli_kit, cli_run, cli_runs, cli_sweep

    cli_run.add_commands(command, recipe_args)
    cli_sweep.add_commands(command, recipe_args)

    validate = command("validate", cmd_validate, "check a recipe without building anything")
    recipe_args(validate)
    validate.add_argument("--print", action="store_true", help="print the recipe as a run would write it: "
                          "includes merged, overrides applied, defaults filled in (TOML)")

    plugins = command("list-plugins", cmd_list_plugins, "list installed plugins and their components")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    show = command("show", cmd_show, "show a component's parameters")
    show.add_argument("name", help="component name, e.g. sgd or popularity.simplenet")

    schema = command("schema", cmd_schema, "print the JSON Schema of recipes (draft 2020-12)")
    schema.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")

    cli_inference.add_commands(command)
    cli_kit.add_commands(command)
    cli_runs.add_commands(command)
    return parser


# ------------------------------------------------------------------------------ commands


def cmd_validate(args: argparse.Namespace) -> int:
    plugins = discover_plugins()
    recipe = load_recipe(args.recipe, plugins.registry, args.overrides)
    if args.print:  # TOML alone on stdout, so it can be saved and run as it is
        sets = "".join(f" --set {o}" for o in args.overrides)
        sys.stdout.write(f"# {args.recipe}{sets}: includes merged, overrides applied, defaults filled in.\n\n"
                         + tomli_w.dumps(resolved(recipe)))
        return 0
    names = ", ".join(f"{kind} {spec.name}" for _, kind, spec in recipe.component_specs())
    out.print(Text(f"{args.recipe}: ok ({names})"))
    return 0


def cmd_list_plugins(args: argparse.Namespace) -> int:
    plugins = discover_plugins(warn=not args.json)
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "module": p.module,
            "status": p.status,
            "error": p.error,
            "components": p.components_by_kind(),
        }
        for p in plugins.registry.plugins
    ]
    for row, plugin in zip(rows, plugins.registry.plugins):
        # A plugin declares the pipeforge versions it supports in its dependencies.
        wrong = [text for kind, text in requirement_findings(plugin) if kind == "problem"]
        if plugin.status == "ok" and wrong:
            row["status"], row["error"] = "incompatible", wrong[0]
    if args.json:
        out.print_json(json.dumps({"plugins": rows}))
        return 0
    table = Table(title="pipeforge plugins")
    for column in ("plugin", "distribution", "version", "status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['error']}"
        table.add_row(*map(Text, (row["name"], row["distribution"], row["version"], status)))
    out.print(table)
    # Components below the table, a line per kind: names wrap between names and are never cut
    # (a column of the table above would cut them at 80 columns).
    for row in rows:
        if row["components"]:
            out.print(Text(f"\n{row['name']} ({row['distribution']} {row['version']})", style="bold"))
            out.print(Text(_component_grid(row["components"])))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    registry = discover_plugins().registry
    found = [c for c in (registry.find(kind, args.name) for kind in KINDS) if c is not None]
    if not found:
        every = sorted({c.name for c in registry.all_components()})
        hint = did_you_mean(args.name, every)
        raise UsageError(f"no component named '{args.name}'" + (f"; {hint}" if hint else ""))
    for comp in found:
        owner = registry.owner(comp.kind, comp.name)
        # A plugin's names, descriptions and defaults are printed as text, never read as markup.
        title = textwrap.wrap(f"{comp.kind} {comp.name} — {comp.description}", max(out.width, 40),
                              break_long_words=False, break_on_hyphens=False, subsequent_indent="  ")
        out.print(Text("\n".join(title), style="bold"))
        if owner:
            out.print(Text(f"from {owner.distribution} {owner.version}"))
        out.print(Text("\n" + _params_list(comp.params) + "\n"))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from pipeforge.schema import recipe_schema

    text = json.dumps(recipe_schema(discover_plugins().registry), indent=2)
    if args.output:
        try:  # "x": like every file pipeforge writes for a user, an existing one is never replaced
            with open(args.output, "x", encoding="utf-8") as file:
                file.write(text + "\n")
        except FileExistsError:
            raise UsageError(f"{args.output} already exists; nothing was written. Choose another file "
                             "or remove it first.") from None
        except OSError as exc:  # a read-only place, a parent that is a file, a folder named so…
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        out.print(Text(f"wrote {args.output}"))
    else:
        sys.stdout.write(text + "\n")
    return 0


# ------------------------------------------------------------------------------ helpers


def _params_list(model: Any) -> str:
    """A component's params listed as `--help` lists options: the name, then its type and
    default, the description under them."""
    rows = []
    for name, field in model.model_fields.items():
        if field.is_required():
            default = " (required)"
        else:
            value = field.get_default(call_default_factory=True)
            default = " (optional)" if value is None else f" = {_toml_value(value)}"
        rows.append((name, [_type_name(field.annotation) + default, *([field.description] if field.description else [])]))
    return _definitions(rows, out.width) if rows else "  (no params)"


def _component_grid(components: dict[str, list[str]]) -> str:
    """A plugin's components: a line per kind (in `KINDS` order), the names sorted."""
    kinds = sorted(components, key=lambda k: KINDS.index(k) if k in KINDS else len(KINDS))
    return _definitions([(kind, [", ".join(sorted(components[kind]))]) for kind in kinds], out.width)


def _definitions(rows: list[tuple[str, list[str]]], width: int) -> str:
    """`name  text` rows, indented by 2, each text paragraph wrapped between words to `width`
    in a column after the longest name. Nothing is ever cut: a name or word wider than its
    column runs on (a name longer than 30 characters puts its text on the next line)."""
    column = min(max(len(name) for name, _ in rows), 30) + 4
    lines = []
    for name, paragraphs in rows:
        wrapped = [line for text in paragraphs
                   for line in textwrap.wrap(text, max(width - column, 20), break_long_words=False,
                                             break_on_hyphens=False) or [""]]
        head = f"  {name}"
        if len(head) + 2 > column:
            lines.append(head)
        else:
            wrapped[0] = head.ljust(column) + wrapped[0]
            lines.append(wrapped.pop(0))
        lines += [" " * column + line for line in wrapped]
    return "\n".join(lines)


_TYPE_NAMES = {str: "string", bool: "bool", int: "int", float: "float"}


def _type_name(annotation: Any) -> str:
    """A param's type as a recipe writes it: `float`, `list[float]`, `"cos" | "linear"`,
    `table of float`; an optional one without its None (`show` says "(optional)" instead)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, UnionType):
        return " | ".join(_type_name(arg) for arg in args if arg is not type(None))
    if origin is Literal:
        return " | ".join(_toml_value(arg) for arg in args)
    if origin in (list, tuple, set, frozenset):
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"table of {_type_name(args[1])}" if args else "table"
    if isinstance(annotation, type):
        kind = getattr(annotation, "kind", "")  # a nested component spec, e.g. a transform
        return _TYPE_NAMES.get(annotation, kind if isinstance(kind, str) and kind else annotation.__name__)
    return str(annotation).replace("typing.", "")


def _toml_value(value: Any) -> str:
    """A value as TOML writes it (`true`, `"cos"`, `[0.9, 0.999]`); None, which TOML has no
    word for, is "unset"."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + "}"
    return repr(value)

