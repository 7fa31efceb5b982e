"""The crash sweep: kill a small training run at seeded random moments, resume it, and end bitwise
where an unbroken run ends.

SIGKILLs land at random moments of a run — mid-step, inside checkpoint writes (half a temp file
on disk, the temp file complete but not renamed, renamed but the directory not yet synced,
best.pt half linked, model.pt half written) and during resumes — and after each one
`pipeforge run --resume` is run until the run completes. Then `model.pt` and `metrics.jsonl` must
be byte for byte those of an uninterrupted run; every file under a checkpoint's name must be a
complete checkpoint; `--resume` must continue from the newest one; the run dir and its metrics
are never removed. SIGTERM to the whole process group, DataLoader workers included, at random
moments must checkpoint, exit 143 and resume alike.

CI runs a reduced sweep (3 SIGKILLs, 1 group SIGTERM). The full one runs with
`PIPEFORGE_FULL_HARDENING=1` (24 SIGKILLs: >= 5 in checkpoint writes, >= 5 during resumes; 4 group
SIGTERMs). The resume that is left to finish a chain runs the same CLI in the test's own process
(`run_in_process`), sparing a torch start-up. Every kill point comes from `SEED`
(`PIPEFORGE_SWEEP_SEED` explores others), so a failure names the chain and kill that reproduce
it. What landed where is printed at the end of the session and with `pytest -rA`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import HARDENING_REPORT, RECIPES, cli_env, group_gone, run_in_process, run_pipeforge
from datagen import write_image_folder
from pipeforge import checkpoint

pytestmark = pytest.mark.slow

FULL = os.environ.get("PIPEFORGE_FULL_HARDENING") == "1"
SEED = int(os.environ.get("PIPEFORGE_SWEEP_SEED", "20261203"))
QUICKSTART = RECIPES / "quickstart.toml"
# Dropout makes resuming restore the RNGs too; a checkpoint every 4 of the 160 steps.
QUICKSTART_ARGS = ["--set", "trainer.checkpoint_every_steps=4", "--set", "model.dropout=0.1",
                   "--set", "trainer.device=cpu"]
CATFISH = RECIPES / "catfish_simplenet.toml"
PHASES = ("mid-write", "before-rename", "after-rename", "before-dir-fsync")
WAIT_S = 300  # no process of the sweep should run this long; one that does has hung

# A test-only plugin, installed for the sweep's processes. It SIGKILLs its own process at the
# moment SWEEP_KILL names, slows steps and checkpoint writes (so a timed kill can land inside
# one), and appends what the run does to SWEEP_TRACE, so the sweep can say where each kill
# landed. It reaches the write path by wrapping `open` and `os` as pipeforge.atomic sees them:
# the product's own write code runs, with a kill between two of its system calls.
SWEEP_PLUGIN = r'''
import builtins, os, re, signal, sys, time
from pathlib import Path
from pipeforge import hookimpl

KILL = os.environ.get("SWEEP_KILL", "")
TRACE = os.environ.get("SWEEP_TRACE")
STEP_SLEEP = float(os.environ.get("SWEEP_STEP_SLEEP") or 0)
WRITE_SLEEP = float(os.environ.get("SWEEP_WRITE_SLEEP") or 0)
# The temp files pipeforge.atomic writes, and the final names (a writer that skipped the temp
# file would be killed mid-write all the same, and the sweep would see the half file).
WRITTEN = re.compile(r"^\.?(step-\d+\.pt|model\.pt)(\.tmp)?$")
_fd = os.open(TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if TRACE else None
_step_writes = 0   # step checkpoints this process began to write
_links = 0         # best.pt links made


def trace(event):
    if _fd is not None:  # one unbuffered write: a SIGKILL right after loses nothing
        os.write(_fd, f"{os.getpid()} {time.monotonic():.6f} {event}\n".encode())


def die(where):
    trace(f"kill {where}")
    os.kill(os.getpid(), signal.SIGKILL)


def kind_of(target):
    return "model.pt" if target == "model.pt" else "step checkpoint"


def aimed(target, phase):
    """Whether SWEEP_KILL names this moment of the write of `target`."""
    if target == "model.pt":
        return KILL == f"model:{phase}"
    return KILL == f"write:{_step_writes}:{phase}"


class File:
    def __init__(self, f, target):
        self._f, self.target, self.slept = f, target, False

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def write(self, data):
        view = memoryview(data).cast("B")
        half = len(view) // 2
        if aimed(self.target, "mid-write"):
            self._f.write(view[:half])
            self._f.flush()
            os.fsync(self._f.fileno())
            die(f"{kind_of(self.target)} mid-write, half its bytes in the temp file | {self.target}: {half} of {len(view)} bytes")
        if WRITE_SLEEP and not self.slept and half:
            self.slept = True
            done = self._f.write(view[:half])
            self._f.flush()
            time.sleep(WRITE_SLEEP)
            return done + self._f.write(view[half:])
        return self._f.write(data)


def sweep_open(path, mode="r", *args, **kwargs):
    global _step_writes
    f = builtins.open(path, mode, *args, **kwargs)
    match = WRITTEN.match(Path(path).name)
    if not match or "w" not in mode:
        return f
    target = match.group(1)
    if target != "model.pt":
        _step_writes += 1
    trace(f"write-begin {target}")
    return File(f, target)


class Os:
    """`os` as pipeforge.atomic sees it, with kills and a trace around rename, link and fsync."""

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        target = Path(dst).name
        if aimed(target, "before-rename"):
            die(f"{kind_of(target)} complete in its temp file, before the rename | {target}")
        os.replace(src, dst)
        trace(f"renamed {target}")
        if aimed(target, "after-rename"):
            die(f"step checkpoint renamed, before best.pt, pruning and the directory fsync | {target}")

    def link(self, src, dst):
        global _links
        os.link(src, dst)
        _links += 1
        trace(f"best-link {_links}")
        if KILL == f"best-link:{_links}":
            die(f"best.pt linked under its temp name, before the rename | link {_links}")

    def fsync(self, fd):
        import stat
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            return os.fsync(fd)
        where = "checkpoints" if os.readlink(f"/proc/self/fd/{fd}").endswith("/checkpoints") else "run-dir"
        if where == "checkpoints" and KILL == f"write:{_step_writes}:before-dir-fsync":
            die(f"step checkpoint renamed and old ones pruned, before the directory fsync | write {_step_writes}")
        os.fsync(fd)
        trace(f"dir-synced {where}")


if KILL or TRACE or WRITE_SLEEP:
    import pipeforge.atomic

    pipeforge.atomic.open = sweep_open
    pipeforge.atomic.os = Os()
    trace("import " + ("resume" if "--resume" in sys.argv else "run"))
if KILL == "claimed":
    from pipeforge.rundir import RunDir

    def write_recipe(self, *args, **kwargs):
        die("run dir claimed and locked, before recipe.toml is written")

    RunDir.write_recipe = write_recipe


@hookimpl
def register_components():
    return []


@hookimpl
def on_fit_start(state):
    trace(f"fit-start {state.global_step}")
    if KILL == "fit-start":
        die("resume restored, before its first step")


@hookimpl
def on_epoch_start(epoch):
    trace(f"epoch-start {epoch}")


@hookimpl
def on_batch_end(state):
    trace(f"step {state.global_step}")
    if KILL == f"step:{state.global_step}":
        die(f"after a training step | step {state.global_step}")
    if STEP_SLEEP:
        time.sleep(STEP_SLEEP)


@hookimpl
def on_validation_end(split):
    trace(f"evaluated {split}")


@hookimpl
def on_fit_end():
    trace("fit-end")
'''


# ------------------------------------------------------------------------------ processes


@pytest.fixture(scope="module")
def sweep_env(tmp_path_factory) -> dict[str, str]:
    """The CLI environment with the sweep plugin installed (see SWEEP_PLUGIN)."""
    from plugin_dists import make_dist, pip_install

    root = tmp_path_factory.mktemp("sweep-plugin")
    site = pip_install(make_dist(root, "pipeforge-sweep", "sweep", "pipeforge_sweep", SWEEP_PLUGIN), root / "site")
    return cli_env(PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


@dataclass
class Process:
    """One `pipeforge` process of the sweep: started, then signalled or left to finish."""

    proc: subprocess.Popen
    spawned: float  # time.monotonic() at start, the clock the trace uses
    stderr_path: Path
    trace: Path

    @classmethod
    def start(cls, command: list[object], env: dict[str, str], logs: Path, trace: Path,
              new_session: bool = False) -> Process:
        """Start `pipeforge COMMAND`, its stderr going to a file in `logs`."""
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{len(list(logs.iterdir())):03d}.err"
        with open(path, "w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "pipeforge", *map(str, command)], env=env,
                                    start_new_session=new_session, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        return cls(proc, time.monotonic(), path, trace)

    def events(self) -> list[tuple[float, str]]:
        """This process's trace lines: (monotonic time, event)."""
        if not self.trace.exists():
            return []
        found = []
        for line in self.trace.read_text().splitlines():
            owner, stamp, event = line.split(" ", 2)
            if int(owner) == self.proc.pid:
                found.append((float(stamp), event))
        return found

    def reached(self, prefix: str) -> bool:
        """Wait until the process traces an event starting with `prefix`; False if it ended first."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if any(e.startswith(prefix) for _, e in self.events()):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.005)
        raise AssertionError(f"pid {self.proc.pid} never traced {prefix!r}")

    def wait(self) -> tuple[int, str]:
        """The exit status (negative: killed by that signal) and stderr."""
        try:
            self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pid {self.proc.pid} hung; killed after {WAIT_S} s") from None
        return self.proc.returncode, self.stderr_path.read_text()


def time_of(events: list[tuple[float, str]], prefix: str) -> float:
    return next(t for t, e in events if e.startswith(prefix))


def landed_at(events: list[tuple[float, str]], resume: bool, before: float | None = None,
              steps_per_epoch: int = 0) -> str:
    """Where a kill landed (or a signal sent at `before`), from the process's own trace: an
    aimed kill names its moment; otherwise the last events before it tell."""
    seen = [e for t, e in events if before is None or t < before]
    if seen and seen[-1].startswith("kill "):
        return seen[-1][len("kill "):].split(" | ")[0]
    writing: set[str] = set()
    for event in seen:
        kind, _, what = event.partition(" ")
        if kind == "write-begin":
            writing.add("model.pt" if what == "model.pt" else "checkpoints")
        elif kind == "dir-synced":
            writing.discard("checkpoints" if what == "checkpoints" else "model.pt")
    if "checkpoints" in writing:
        return "inside a checkpoint write"
    if writing:
        return "inside the model.pt write"
    lifecycle = [e for e in seen if e.split(" ")[0] in ("fit-start", "epoch-start", "step", "evaluated", "fit-end")]
    last = lifecycle[-1].split(" ") if lifecycle else [""]
    if last[0] == "step":
        if steps_per_epoch and int(last[1]) % steps_per_epoch == 0:
            return "after an epoch's last step: evaluating"
        return "training, between checkpoint writes"
    named = {"fit-start": "set up, before the first step", "epoch-start": "an epoch's start",
             "evaluated": "after evaluating: metrics, epoch-end checkpoint",
             "fit-end": "after training (model.pt written, shutting down)"}
    if last[0] in named:
        return named[last[0]]
    if seen:
        return "start-up: reading the recipe and checkpoint, restoring" if resume else "start-up: setting up the run"
    return "start-up: interpreter and imports"


def in_checkpoint_write(where: str) -> bool:
    return where.startswith(("step checkpoint", "best.pt")) or where == "inside a checkpoint write"


def in_model_write(where: str) -> bool:
    return where.startswith("model.pt") or where == "inside the model.pt write"


def step_number(path: Path) -> int:
    return int(checkpoint.STEP_FILE.match(path.name).group(1))  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ what must hold


@dataclass
class Figures:
    """What a sweep did, for the report and the final assertions."""

    landed: Counter = field(default_factory=Counter)  # "run: <where>" / "resume: <where>"
    missed: list[str] = field(default_factory=list)  # kills the process finished before
    checked_files: int = 0  # checkpoint-named files (and model.pt) verified complete
    leftover_tmp: int = 0  # temp files left in completed run dirs
    identical: int = 0
    runs: int = 0
    failures: list[str] = field(default_factory=list)

    def count(self, test) -> int:
        return sum(n for key, n in self.landed.items() if test(*key.split(": ", 1)))

    def report(self, title: str, what: str, seconds: float) -> None:
        """Print the figures (shown by `pytest -rA`) and add them to the session's report."""
        total = sum(self.landed.values())
        lines = [
            f"{title} (seed {SEED}, {'full' if FULL else 'reduced'} sweep): {total} {what} landed "
            f"({self.count(lambda p, w: p == 'resume')} during a resume, "
            f"{self.count(lambda p, w: in_checkpoint_write(w))} inside a checkpoint write, "
            f"{self.count(lambda p, w: in_model_write(w))} inside the model.pt write), "
            f"{len(self.missed)} missed (the process finished first{': ' if self.missed else ''}"
            f"{', '.join(self.missed)}); resumed runs bitwise identical "
            f"{self.identical}/{self.runs}; {self.checked_files} checkpoint-named files checked complete; "
            f"{self.leftover_tmp} temp files left in completed runs; {seconds:.0f} s",
            *(f"  {n} x {key}" for key, n in sorted(self.landed.items(), key=lambda kv: (-kv[1], kv[0]))),
            *(f"  FAILED {failure.splitlines()[0][:300]}" for failure in self.failures),
        ]
        HARDENING_REPORT.extend(lines)
        print("\n".join(lines))


def check_after_stop(run_dir: Path, had_metrics: bool, figures: Figures) -> int:
    """After a kill or a stop: the run dir and its metrics are there, and every file under a
    checkpoint's name (and model.pt) is complete. Returns the newest step checkpoint (0: none)."""
    if had_metrics:
        assert (run_dir / "metrics.jsonl").is_file(), f"{run_dir}: metrics.jsonl was removed"
    files = checkpoint.step_files(run_dir / "checkpoints")
    for path in [*files, run_dir / "checkpoints" / "best.pt"]:
        if path.exists():
            checkpoint.load(path)  # a CheckpointError: a half-written file under a checkpoint's name
            figures.checked_files += 1
    if (run_dir / "model.pt").exists():
        checkpoint.read_torch_file(run_dir / "model.pt", "weights file")
        figures.checked_files += 1
    return step_number(files[-1]) if files else 0


def check_resumed_from(stderr: str, newest: int) -> None:
    """`--resume` continued from the newest checkpoint on disk: none skipped, none half-written."""
    if newest:
        assert f"from step-{newest:08d}.pt" in stderr, stderr[-2000:]
    else:
        assert "has no checkpoint yet" in stderr, stderr[-2000:]


def compare(run_dir: Path, reference: Path) -> str | None:
    """None when model.pt and metrics.jsonl are byte for byte the reference's; else what differs."""
    problems = []
    if (run_dir / "model.pt").read_bytes() != (reference / "model.pt").read_bytes():
        mine = torch.load(run_dir / "model.pt", weights_only=True)
        theirs = torch.load(reference / "model.pt", weights_only=True)
        differ = [k for k in theirs if k not in mine or not torch.equal(mine[k], theirs[k])]
        problems.append(f"model.pt differs (tensors: {differ or 'equal, the bytes are not'})")
    if (run_dir / "metrics.jsonl").read_text() != (reference / "metrics.jsonl").read_text():
        problems.append("metrics.jsonl differs")
    return "; ".join(problems) or None


def continue_run(run_dir: Path, new: list[object]) -> tuple[list[object], bool]:
    """What a user runs after a kill: `--resume` once the run dir holds its recipe; before that
    nothing was set up, and the first command again."""
    if (run_dir / "recipe.toml").exists():
        return ["run", "--resume", run_dir], True
    return new, False


@dataclass
class Calibration:
    """An uninterrupted, instrumented run: the reference, and the sizes a kill is aimed by."""

    run_dir: Path
    startup_s: float  # spawn → training starts
    setup_s: float  # plugins loaded → training starts (torch imported, data and model built)
    fit_s: float  # training starts → training ends
    steps: int
    steps_per_epoch: int
    writes: int  # step checkpoint writes
    links: int  # best.pt links

    @classmethod
    def run(cls, command: list[object], env: dict[str, str], root: Path, plain: bool) -> Calibration:
        """Run `command` uninterrupted; with `plain`, also without the plugin, which must give
        the same bytes (the instrumentation changes nothing the run computes)."""
        trace, run_dir = root / "trace", root / "run"
        process = Process.start([*command, "--run-dir", run_dir], {**env, "SWEEP_TRACE": str(trace)}, root / "logs", trace)
        code, stderr = process.wait()
        assert code == 0, stderr
        events = process.events()
        names = [e for _, e in events]
        steps = [int(e.split()[1]) for e in names if e.startswith("step ")]
        first_epoch = names[names.index("epoch-start 1"):names.index("epoch-start 2")]
        if plain:
            done = run_pipeforge(*command, "--run-dir", root / "plain")
            assert done.returncode == 0, done.stderr
            assert compare(root / "plain", run_dir) is None, "the sweep plugin changed what the run computes"
        start = time_of(events, "fit-start")
        return cls(run_dir, start - process.spawned, start - time_of(events, "import"),
                   time_of(events, "fit-end") - start, max(steps),
                   sum(1 for e in first_epoch if e.startswith("step ")),
                   sum(1 for e in names if e.startswith("write-begin step")),
                   sum(1 for e in names if e.startswith("best-link")))


# ------------------------------------------------------------------------------ SIGKILL


@dataclass(frozen=True)
class Kill:
    """One planned SIGKILL. `u` (drawn from the seed) picks the moment: the delay of a timed
    kill, the step or write of an aimed one, mapped onto what the process has left to do."""

    kind: str  # time, startup, step, fit-start, write, best-link, model
    u: float
    phase: str = ""

    def __str__(self) -> str:
        return f"{self.kind}{':' + self.phase if self.phase else ''}@{self.u:.3f}"


def sigkill_plan(seed: int, full: bool) -> list[list[Kill]]:
    """Chains of kills: the first kills the run, the others kill the resumes that follow."""
    rng = random.Random(seed)
    phases = list(PHASES) * 3  # dealt in turn: every moment of a write gets its kills
    rng.shuffle(phases)

    def kill(kind: str) -> Kill:
        u = rng.random()
        if kind == "write":
            return Kill(kind, u, phases.pop())
        return Kill(kind, u, rng.choice(PHASES[:2]) if kind == "model" else "")

    if not full:
        return [[kill("write"), kill("time"), kill("write")]]
    runs = ["write", "write", "write", "time", "time", "startup", "best-link", "model"]
    resumes = ["time"] * 5 + ["fit-start"] * 2 + ["step"] * 4 + ["write"] * 5
    rng.shuffle(runs)
    rng.shuffle(resumes)
    return [[kill(runs[i]), kill(resumes[2 * i]), kill(resumes[2 * i + 1])] for i in range(len(runs))]


def aim(kill: Kill, cal: Calibration, newest: int, resuming: bool) -> tuple[str, float | None, str]:
    """SWEEP_KILL for an aimed kill ("" for a timed one), the delay of a timed one and what it
    counts from (the start, or the first event of that name), for a process starting from step
    `newest`."""
    left = cal.steps - newest  # steps still to train
    if resuming and not left and kill.kind in ("step", "write"):
        return "fit-start", None, ""  # all trained, model.pt to write: the resume's one moment
    if kill.kind == "time" and not resuming:
        return "", kill.u * cal.fit_s, "fit-start"
    if kill.kind == "time":  # a resume: from its set-up (loading, restoring) into training
        return "", kill.u * (cal.setup_s + 0.5 * cal.fit_s * left / cal.steps), "import"
    if kill.kind == "startup":
        return "", kill.u * cal.startup_s, "spawn"
    if kill.kind == "step":
        return f"step:{newest + 1 + int(kill.u * left)}", None, ""
    if kill.kind == "write":
        # A resume's kill lands in one of its first writes, while it is still resuming.
        writes = max(1, round(cal.writes * left / cal.steps))
        return f"write:{1 + int(kill.u * (min(3, writes) if resuming else writes))}:{kill.phase}", None, ""
    if kill.kind == "best-link":
        return f"best-link:{1 + int(kill.u * cal.links)}", None, ""
    if kill.kind == "model":
        return f"model:{kill.phase}", None, ""
    return kill.kind, None, ""


SLOW = {"SWEEP_STEP_SLEEP": "0.01", "SWEEP_WRITE_SLEEP": "0.005"}


@pytest.fixture(scope="module")
def quickstart_reference(sweep_env, tmp_path_factory) -> Calibration:
    """The run every killed one must end as, instrumented and slowed as the killed ones are."""
    return Calibration.run(["run", QUICKSTART, "--quiet", *QUICKSTART_ARGS], {**sweep_env, **SLOW},
                           tmp_path_factory.mktemp("quickstart-reference"), plain=FULL)


def run_chain(chain: list[Kill], cal: Calibration, env: dict[str, str], root: Path, figures: Figures) -> None:
    """Kill a run and its resumes as `chain` says, resume once more, and compare."""
    run_dir, trace, logs = root / "run", root / "trace", root / "logs"
    new: list[object] = ["run", QUICKSTART, "--run-dir", run_dir, *QUICKSTART_ARGS]
    newest = 0
    for kill in chain:
        had_metrics = (run_dir / "metrics.jsonl").exists()
        command, resuming = continue_run(run_dir, new)
        spec, delay, origin = aim(kill, cal, newest, resuming)
        process = Process.start(command, {**env, **SLOW, "SWEEP_TRACE": str(trace), "SWEEP_KILL": spec}, logs, trace)
        if delay is not None and (origin == "spawn" or process.reached(origin)):
            started = process.spawned if origin == "spawn" else time.monotonic()
            time.sleep(max(0.0, started + delay - time.monotonic()))
            process.proc.kill()
        code, stderr = process.wait()
        if code == 0:
            figures.missed.append(f"{root.name} {kill}")  # it finished first: the chain is done
            break
        assert code == -signal.SIGKILL, f"{kill} exits {code}:\n{stderr[-3000:]}"
        if resuming and "resuming" in stderr:
            check_resumed_from(stderr, newest)
        figures.landed[f"{'resume' if resuming else 'run'}: {landed_at(process.events(), resuming)}"] += 1
        if run_dir.exists() or had_metrics:
            newest = check_after_stop(run_dir, had_metrics, figures)
    else:
        command, resuming = continue_run(run_dir, new)
        done = run_in_process(*command)  # left to finish: in this process, without a torch start-up
        assert done.returncode == 0, f"the resume after the last kill exits {done.returncode}:\n{done.stderr[-3000:]}"
        if resuming:
            check_resumed_from(done.stderr, newest)
    figures.runs += 1
    difference = compare(run_dir, cal.run_dir)
    assert difference is None, difference
    figures.identical += 1
    figures.leftover_tmp += sum(1 for _ in run_dir.rglob(".*.tmp"))


def test_sigkill_sweep_resumes_bitwise_identical(quickstart_reference, sweep_env, tmp_path):
    """SIGKILL at seeded random moments — in steps, inside checkpoint writes, during resumes —
    then resume: bitwise the uninterrupted run; no half-written checkpoint is ever accepted."""
    figures, began = Figures(), time.monotonic()
    for index, chain in enumerate(sigkill_plan(SEED, FULL)):
        try:
            run_chain(chain, quickstart_reference, sweep_env, tmp_path / f"chain-{index}", figures)
        except (AssertionError, checkpoint.CheckpointError) as exc:
            figures.failures.append(f"chain {index} {[str(k) for k in chain]}: {exc}")
    figures.report("SIGKILL sweep", "SIGKILLs", time.monotonic() - began)
    assert not figures.failures, "\n\n".join(figures.failures)
    if FULL:
        assert sum(figures.landed.values()) >= 20, figures.landed
        assert figures.count(lambda p, w: p == "resume") >= 5, figures.landed
        assert figures.count(lambda p, w: in_checkpoint_write(w)) >= 5, figures.landed
    else:  # a timed kill may miss a fast process; the aimed ones cannot
        assert sum(figures.landed.values()) >= 2 and figures.count(lambda p, w: in_checkpoint_write(w)) >= 1


def test_a_kill_right_after_the_run_dir_is_claimed_leaves_a_run_dir_that_can_be_used(
        quickstart_reference, sweep_env, tmp_path):
    """Killed between locking a new run dir and writing its recipe, a run leaves only its own
    `.lock`: running it again (or resuming it) must train, not refuse the dir for good."""
    run_dir = tmp_path / "run"
    command = ["run", QUICKSTART, "--run-dir", run_dir, "--quiet", *QUICKSTART_ARGS]
    killed = run_pipeforge(*command, env={**sweep_env, "SWEEP_KILL": "claimed"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    again = run_in_process(*command)  # after the kill, in this process (no second torch start-up)
    resumed = run_in_process("run", "--resume", run_dir, "--quiet") if again.returncode else again
    assert resumed.returncode == 0, f"run again: exit {again.returncode}: {again.stderr}\n" \
                                    f"--resume: exit {resumed.returncode}: {resumed.stderr}"
    assert compare(run_dir, quickstart_reference.run_dir) is None


# ------------------------------------------------------------------------------ group SIGTERM


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("catfish") / "catfish").root


def catfish_command(root: Path) -> list[object]:
    # A DataLoader with a worker process: the path the cat/fish and CIFAR recipes take.
    return ["run", CATFISH, "--set", f"dataset.root={root}", "--set", "trainer.epochs=3",
            "--set", "trainer.batch_size=4", "--set", "trainer.num_workers=1", "--quiet"]


STEP_SLEEP = {"SWEEP_STEP_SLEEP": "0.05"}


@pytest.fixture(scope="module")
def catfish_reference(sweep_env, image_folder, tmp_path_factory) -> Calibration:
    return Calibration.run(catfish_command(image_folder), {**sweep_env, **STEP_SLEEP},
                           tmp_path_factory.mktemp("catfish-reference"), plain=FULL)


def sigterm_plan(seed: int, full: bool) -> list[list[float]]:
    """Chains of moments (a share of the training time left): a run, then its resumes."""
    rng = random.Random(seed + 1)
    return [[rng.random(), rng.random()] for _ in range(2)] if full else [[rng.random()]]


def sigterm_chain(chain: list[float], cal: Calibration, command: list[object], env: dict[str, str],
                  root: Path, figures: Figures) -> None:
    """SIGTERM the process group of a run and of its resumes at the moments `chain` gives; each
    stop checkpoints and exits 143; a last resume ends bitwise as the reference."""
    run_dir, trace, logs = root / "run", root / "trace", root / "logs"
    newest = 0
    for u in chain:
        had_metrics = (run_dir / "metrics.jsonl").exists()
        resuming = newest > 0
        args = ["run", "--resume", run_dir, "--quiet"] if resuming else [*command, "--run-dir", run_dir]
        process = Process.start(args, {**env, **STEP_SLEEP, "SWEEP_TRACE": str(trace)}, logs, trace, new_session=True)
        sent = None
        if process.reached("fit-start"):
            time.sleep(u * cal.fit_s * (cal.steps - newest) / cal.steps)
            sent = time.monotonic()
            try:
                os.killpg(process.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                sent = None
        code, stderr = process.wait()
        if code == 0:
            figures.missed.append(f"{root.name} @{u:.3f}")  # it finished first: the chain is done
            return finish_sigterm_chain(run_dir, cal, figures)
        assert code == 143, f"SIGTERM at {u:.3f}: exit {code}:\n{stderr[-3000:]}"
        assert "Resume with: pipeforge run --resume" in stderr and "Traceback" not in stderr, stderr[-3000:]
        assert "DataLoader worker" not in stderr, stderr[-3000:]
        assert group_gone(process.proc.pid, within_s=30), "a DataLoader worker outlived the run"
        assert not (run_dir / "model.pt").exists()
        where = landed_at(process.events(), resuming, before=sent, steps_per_epoch=cal.steps_per_epoch)
        figures.landed[f"{'resume' if resuming else 'run'}: {where}"] += 1
        stopped_at = check_after_stop(run_dir, had_metrics, figures)
        assert stopped_at > newest, "the stop wrote no checkpoint"
        newest = stopped_at
    resumed = run_in_process("run", "--resume", run_dir)  # the last resume, uninterrupted: in this process
    assert resumed.returncode == 0, resumed.stderr
    check_resumed_from(resumed.stderr, newest)
    finish_sigterm_chain(run_dir, cal, figures)


def finish_sigterm_chain(run_dir: Path, cal: Calibration, figures: Figures) -> None:
    figures.runs += 1
    difference = compare(run_dir, cal.run_dir)
    assert difference is None, difference
    figures.identical += 1
    figures.leftover_tmp += sum(1 for _ in run_dir.rglob(".*.tmp"))


def test_group_sigterm_sweep_with_workers_resumes_bitwise_identical(catfish_reference, image_folder, sweep_env, tmp_path):
    """SIGTERM to the whole process group (systemd, Slurm's scancel) at seeded random moments,
    DataLoader workers running: each stop checkpoints and exits 143, and resuming ends bitwise
    where an unbroken run ends."""
    figures, began = Figures(), time.monotonic()
    for index, chain in enumerate(sigterm_plan(SEED, FULL)):
        try:
            sigterm_chain(chain, catfish_reference, catfish_command(image_folder), sweep_env,
                          tmp_path / f"chain-{index}", figures)
        except (AssertionError, checkpoint.CheckpointError) as exc:
            figures.failures.append(f"chain {index} {[f'{u:.3f}' for u in chain]}: {exc}")
    figures.report("Group SIGTERM sweep", "SIGTERMs", time.monotonic() - began)
    assert not figures.failures, "\n\n".join(figures.failures)
    assert sum(figures.landed.values()) >= (3 if FULL else 1), figures.landed
