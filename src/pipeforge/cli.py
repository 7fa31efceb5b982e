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
from pathlib import Path
from typing import Any, Callable

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
    for column in ("plugin", "distribution", "version", "status", "components"):
        table.add_column(column)
    for row in rows:
        parts = [f"{kind}: {', '.join(names)}" for kind, names in row["components"].items()]
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['error']}"
        table.add_row(*map(Text, (row["name"], row["distribution"], row["version"], status, "\n".join(parts))))
    out.print(table)
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
        table = Table(title=Text(f"{comp.kind} {comp.name} — {comp.description}"),
                      caption=Text(f"from {owner.distribution} {owner.version}") if owner else None)
        for column in ("param", "type", "default", "description"):
            table.add_column(column)
        for name, field in comp.params.model_fields.items():
            default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
            table.add_row(*map(Text, (name, _type_name(field.annotation), default, field.description or "")))
        out.print(table)
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


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")

