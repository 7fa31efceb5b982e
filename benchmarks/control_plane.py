"""How long the control plane takes with every installed plugin: `validate`, `list-plugins`,
`schema` and `show`, each in a fresh interpreter (torch is never imported by them).

    python benchmarks/control_plane.py [--rounds 5]

Reports, per command, the median over rounds of (a) the command's own CPU time once the CLI is
imported — discovery of every plugin, validation, printing — and (b) the wall time of the whole
`python -m pipeforge …` process, interpreter start-up included. The target for (a) is 0.5 s
(issues: the torch catalog, the integration plugins). CPU time is what other processes on a
shared machine disturb least; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMED = """
import contextlib, io, sys, time
from pipeforge.cli import main
start = time.process_time()
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(code, time.process_time() - start, "torch" in sys.modules)
"""
COMMANDS = {
    "validate (quickstart)": ["validate", str(ROOT / "recipes" / "quickstart.toml")],
    "validate (whole catalog)": ["validate", str(ROOT / "tests" / "data" / "catalog.toml")],
    "list-plugins": ["list-plugins"],
    "schema": ["schema"],
    "show sgd": ["show", "sgd"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, NO_COLOR="1")
    load = os.getloadavg()[0]
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            done = subprocess.run([sys.executable, "-c", TIMED, *command], capture_output=True, text=True, env=env)
            code, seconds, torch_loaded = done.stdout.split()[-3:]
            if code != "0" or torch_loaded != "False":
                raise SystemExit(f"{name}: exit {code}, torch imported: {torch_loaded}\n{done.stderr[-2000:]}")
            cpu[name].append(float(seconds))
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeforge", *command], capture_output=True, env=env, check=True)
            wall[name].append(time.perf_counter() - started)
    from importlib.metadata import entry_points

    plugins = sorted(ep.name for ep in entry_points(group="pipeforge"))
    print(f"## Control plane (`python benchmarks/control_plane.py --rounds {args.rounds}`)\n")
    print(f"1-minute load average before: {load:.2f}; plugins installed: "
          f"{len(plugins)} ({', '.join(plugins)}).\n")
    print("| command | own CPU s, median | whole process wall s, median |\n|---|---|---|")
    for name in COMMANDS:
        print(f"| {name} | {statistics.median(cpu[name]):.3f} | {statistics.median(wall[name]):.2f} |")


if __name__ == "__main__":
    main()
