"""`pipeforge new-plugin` and `pipeforge check-plugin`: the plugin author's commands.

The work is done by `pipeforge.kit` (imported when a command runs); this module prints. The
`check-plugin --json` output is stable: `{"plugin", "distribution", "version", "module",
"source", "ok", "problems": [{"kind", "name", "message"}], "notes": [...], "passed": [...]}`.
Exit codes: new-plugin 0, or 2 for a bad name or a non-empty folder; check-plugin 0 when the
plugin has no problem, 1 when it has any, 2 when no installed plugin has that name.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from rich.text import Text

from pipeforge.errors import EXIT_FAILURE


def add_commands(command: Callable[..., Any]) -> None:
    """Add the plugin-author commands with the CLI's `command(name, func, help)` factory."""
    new = command("new-plugin", cmd_new_plugin, "write a complete, working plugin to start a new one from")
    new.add_argument("name", metavar="NAME",
                     help="the plugin's name: lowercase letters, digits and _ (its components are NAME.<component>)")
    new.add_argument("--dir", type=Path, metavar="DIR",
                     help="folder to write it in, new or empty (default: ./pipeforge-NAME)")

    check = command("check-plugin", cmd_check_plugin,
                    "build and try every component of an installed plugin; list every problem (exit 1 if any)")
    check.add_argument("target", metavar="NAME_OR_PATH",
                       help="an installed plugin's name (as in list-plugins), or its source folder")
    check.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from pipeforge.cli_common import out
    from pipeforge.kit.scaffold import new_plugin, render

    directory = new_plugin(args.name, args.dir)
    out.print(Text(f"wrote the plugin pipeforge-{args.name} in {directory}:"))
    for relative in sorted(render(args.name)):
        out.print(Text(f"  {directory / relative}"))
    out.print(Text("next:"))
    for line in next_commands(args.name, directory):
        out.print(Text(f"  {line}"))
    return 0


def next_commands(name: str, directory: Path) -> list[str]:
    """What to run after `new-plugin`, from the folder it was run in (docs/writing-plugins.md
    shows the same commands)."""
    # "./" so that pip reads a relative folder as a path, not as a project name on an index.
    folder = str(directory) if directory.is_absolute() else f"./{directory}"
    run_dir = f"runs/{name}"
    return [shlex.join(words) for words in (
        ["pip", "install", "-e", folder],
        ["pytest", f"{folder}/tests"],
        ["pipeforge", "run", f"{folder}/recipes/{name}.toml", "--run-dir", run_dir],
        ["pipeforge", "predict", run_dir, f"{folder}/examples/vertical.json"],
        ["pipeforge", "check-plugin", folder],
    )]


def cmd_check_plugin(args: argparse.Namespace) -> int:
    from pipeforge.cli_common import discover_plugins, out
    from pipeforge.kit.check import check_plugin

    # The plugin's own state is part of the report; warnings about other plugins are noise here.
    report = check_plugin(args.target, discover_plugins(warn=False))
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        return EXIT_FAILURE if report.problems else 0
    info = report.plugin
    where = f", from {report.source}" if report.source else ""
    out.print(Text(f"plugin '{info.name}' ({info.distribution} {info.version}{where})", style="bold"))
    for tag, style, findings in (("ok", "green", report.passed), ("note", "yellow", report.notes),
                                 ("problem", "bold red", report.problems)):
        for finding in findings:
            out.print(Text(f"  {tag:<8}", style=style) + Text(finding.render()))
    count = len(report.problems)
    if count:
        out.print(Text(f"{count} problem{'s' if count != 1 else ''}", style="bold red"))
        return EXIT_FAILURE
    out.print(Text("no problems", style="green"))
    return 0
