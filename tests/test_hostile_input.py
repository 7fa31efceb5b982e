"""Hostile plugins, paths, output locations, inputs and weight files (issue 12, defects 8-11).

Each test is a case an attack on pipeforge found: the command must exit 2 with one message
naming the place (no traceback), keep machine-readable output valid, and never load a damaged
weight file. Read-only locations are made with `chattr +i` (which stops root too) or, for a
user who is not root, with the permission bits; a test skips only where neither works.

Commands whose process is not what a test is about run through the same CLI in this process
(`run_in_process`): an interpreter importing torch for each refused command was most of this
file's time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Iterator

import pytest

from conftest import RECIPES, cli_env, run_in_process, run_pipeforge
from plugin_dists import make_dist, pip_install
from pipeforge.errors import CheckpointError, DataError, UsageError
from pipeforge.plugins import discover
from pipeforge.rundir import RunDir

QUICKSTART = RECIPES / "quickstart.toml"
POPULARITY = RECIPES / "popularity_mlp.toml"


def no_traceback(result: subprocess.CompletedProcess) -> bool:
    return "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr and len(result.stderr) < 4096


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """Make `directory` refuse new files, for root too (`chattr +i`) where the filesystem
    allows, else by its permission bits; skip the test if neither makes it read-only."""
    directory.mkdir(parents=True, exist_ok=True)
    immutable = subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0 \
        if shutil.which("chattr") else False
    mode = directory.stat().st_mode
    if not immutable:
        directory.chmod(0o555)
    try:
        try:
            (directory / ".probe").touch()
        except OSError:
            pass
        else:
            (directory / ".probe").unlink()
            pytest.skip("cannot make a read-only directory here (root on a filesystem without chattr)")
        yield directory
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        else:
            directory.chmod(mode)


def flip_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor record of a torch zip file, leaving
    the archive's structure intact (only the record's CRC no longer matches)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x5A
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------ plugins (defect 8)


def plugin_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> metadata.EntryPoint:
    module = f"pipeforge_hostile_{name}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(module, None)
    return metadata.EntryPoint(name=name, value=module, group="pipeforge")


def test_a_plugin_calling_sys_exit_at_import_is_broken_not_fatal(tmp_path, monkeypatch):
    entry = plugin_entry(tmp_path, monkeypatch, "exits", "import sys\nsys.exit(3)\n")
    (plugin,) = discover([entry]).registry.plugins
    assert plugin.status == "broken"
    assert plugin.error.startswith("SystemExit") and "3" in plugin.error


def test_a_plugin_raising_keyboard_interrupt_at_import_is_broken_not_fatal(tmp_path, monkeypatch):
    entry = plugin_entry(tmp_path, monkeypatch, "interrupts", "raise KeyboardInterrupt\n")
    (plugin,) = discover([entry]).registry.plugins
    assert plugin.status == "broken" and plugin.error.startswith("KeyboardInterrupt")


def test_a_real_ctrl_c_while_plugins_load_still_interrupts(tmp_path, monkeypatch):
    entry = plugin_entry(tmp_path, monkeypatch, "slow", """
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while this plugin loads
        for _ in range(500):
            time.sleep(0.01)
    """)
    with pytest.raises(KeyboardInterrupt):
        discover([entry])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_plugin_printing_while_it_loads_writes_nothing_to_stdout(tmp_path, monkeypatch, capsys):
    entry = plugin_entry(tmp_path, monkeypatch, "chatty", """
        from pipeforge import hookimpl
        print("hello from an import")

        @hookimpl
        def register_components():
            print("hello from register_components")
            return []
    """)
    (plugin,) = discover([entry]).registry.plugins
    assert plugin.status == "ok"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "hello from an import" in captured.err and "hello from register_components" in captured.err


HOSTILE_PLUGINS = {
    "exits": "import sys\nsys.exit(3)\n",
    "interrupts": "raise KeyboardInterrupt\n",
    "chatty": """
        from pipeforge import hookimpl
        print("hello from an import")

        @hookimpl
        def register_components():
            print("hello from register_components")
            return []
    """,
}


@pytest.mark.slow
def test_hostile_plugins_leave_every_command_working(tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:  # pip processes, two at a time (CI has two cores)
        sites = list(pool.map(
            lambda item: pip_install(make_dist(tmp_path, f"pipeforge-{item[0]}", item[0], f"pipeforge_{item[0]}", item[1]),
                                     tmp_path / f"site-{item[0]}"),
            HOSTILE_PLUGINS.items()))
    env = cli_env(PYTHONPATH=os.pathsep.join(map(str, sites)))
    listed = run_pipeforge("list-plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}  # stdout is only JSON
    assert plugins["exits"]["status"] == "broken" and "SystemExit" in plugins["exits"]["error"]
    assert plugins["interrupts"]["status"] == "broken" and "KeyboardInterrupt" in plugins["interrupts"]["error"]
    assert plugins["chatty"]["status"] == "ok"
    checked = run_pipeforge("validate", QUICKSTART, env=env)
    assert checked.returncode == 0, checked.stderr
    assert "pipeforge-exits" in checked.stderr and "pipeforge-interrupts" in checked.stderr


# ------------------------------------------------------------------------------ rich markup (defect 10)


@pytest.mark.slow
def test_paths_that_look_like_markup_are_printed_as_they_are(tmp_path):
    run_dir = tmp_path / "exp[bold]" / "x[/x]"
    result = run_pipeforge("run", QUICKSTART, "--run-dir", run_dir, "--set", "trainer.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"run dir {run_dir}" in result.stderr  # the reporter's first line
    assert f"run dir: {run_dir}" in result.stdout
    evaluated = run_in_process("evaluate", run_dir, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{run_dir} (model.pt)" in evaluated.stdout


# ------------------------------------------------------------------------------ run dirs and outputs (defect 9)


def test_a_dangling_symlink_run_dir_is_refused_naming_its_target(tmp_path):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(UsageError) as caught:
        RunDir.claim(link, "x")
    message = str(caught.value)
    assert str(link) in message and "symbolic link" in message and str(tmp_path / "gone") in message
    assert link.is_symlink() and not (tmp_path / "gone").exists()  # nothing was made


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished popularity run with step checkpoints (a few seconds)."""
    run_dir = tmp_path_factory.mktemp("popularity") / "run"
    result = run_in_process("run", POPULARITY, "--run-dir", run_dir, "--quiet", "--set", "trainer.epochs=2",
                            "--set", "trainer.checkpoint_every_steps=10")
    assert result.returncode == 0, result.stderr
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("command", ["schema", "export", "evaluate", "run"])
def test_an_output_in_a_read_only_place_is_a_usage_error(command, trained, tmp_path):
    with read_only(tmp_path / "ro") as ro:
        target = ro / "out"
        args = {
            "schema": ["schema", "-o", target],
            "export": ["export", trained, "--format", "torchscript", "-o", target],
            "evaluate": ["evaluate", trained, "-o", target],
            "run": ["run", QUICKSTART, "--run-dir", target],
        }[command]
        result = run_in_process(*args, cwd=tmp_path)
        assert list(ro.iterdir()) == []
    assert result.returncode == 2, result.stderr
    assert str(target) in result.stderr and no_traceback(result)


@pytest.mark.slow
def test_resume_refuses_a_run_whose_checkpoints_cannot_be_written(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    metrics = (run_dir / "metrics.jsonl").read_text()
    with read_only(run_dir / "checkpoints") as checkpoints:
        result = run_in_process("run", "--resume", run_dir, "--set", "trainer.epochs=4", "--quiet")
    assert result.returncode == 2, result.stderr
    assert str(checkpoints) in result.stderr and no_traceback(result)
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before
    assert (run_dir / "metrics.jsonl").read_text() == metrics


def test_a_checkpoint_with_the_marker_but_missing_keys_is_a_checkpoint_error(tmp_path):
    import torch

    from pipeforge import checkpoint

    path = tmp_path / "step-00000001.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION}, path)
    with pytest.raises(CheckpointError, match=f"{path}: a damaged pipeforge checkpoint: the field '.*' is missing"):
        checkpoint.load(path)


@pytest.mark.slow
def test_evaluate_refuses_a_checkpoint_with_the_marker_but_missing_keys(trained, tmp_path):
    import torch

    path = tmp_path / "partial.pt"
    torch.save({"format": "pipeforge-checkpoint", "format_version": 1, "recipe": {}}, path)
    result = run_in_process("evaluate", trained, "--checkpoint", path)
    assert result.returncode == 2
    assert str(path) in result.stderr and "is missing" in result.stderr and no_traceback(result)


# ------------------------------------------------------------------------------ predict inputs (defect 9)


def read_products(*inputs: str):
    from pipeforge_popularity.predict import read_products as read

    return read(None, list(inputs), None)


@pytest.mark.parametrize("case", ["deep JSON file", "deep JSON literal", "128 KB CSV field", "huge JSON integer"])
def test_predict_inputs_that_break_the_parsers_are_data_errors(case, tmp_path):
    source = tmp_path / ("input.csv" if "CSV" in case else "input.json")
    if case == "128 KB CSV field":
        source.write_text("price,rating\n" + "1" * (128 * 1024 + 10) + ",2\n")
    elif case == "huge JSON integer":
        source.write_text("[[" + "1" * 5000 + ", 2]]")
    else:
        source.write_text("[" * 100_000 + "]" * 100_000)
    given = source.read_text() if case == "deep JSON literal" else str(source)
    with pytest.raises(DataError) as caught:
        read_products(given)
    message = str(caught.value)
    assert len(message) < 1000
    if case != "deep JSON literal":
        assert message.startswith(f"{source}:")


@pytest.mark.slow
def test_predict_with_deeply_nested_json_is_a_usage_error(trained, tmp_path):
    source = tmp_path / "deep.json"
    source.write_text("[" * 100_000 + "]" * 100_000)
    result = run_in_process("predict", trained, source)
    assert result.returncode == 2 and str(source) in result.stderr and no_traceback(result)


# ------------------------------------------------------------------------------ weight files (defect 11)


def test_a_flipped_byte_in_a_tensor_is_refused_naming_the_file(tmp_path):
    import torch

    from pipeforge.checkpoint import read_torch_file

    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.arange(4096, dtype=torch.float32)}, path)
    assert torch.equal(read_torch_file(path)["weight"], torch.arange(4096, dtype=torch.float32))
    flip_tensor_byte(path)
    with pytest.raises(CheckpointError, match=f"{path}: .*damaged"):
        read_torch_file(path)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
@pytest.mark.parametrize("damaged", ["model.pt", "step checkpoint"])
def test_a_damaged_weight_file_is_refused_by_every_command(command, damaged, trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    if damaged == "model.pt":
        path, choice = run_dir / "model.pt", []
    else:
        path = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
        choice = ["--checkpoint", path]
    flip_tensor_byte(path)
    extra = {"predict": ["[[7.5, 3.0]]"], "export": ["--format", "torchscript", "-o", tmp_path / "m.ts"]}
    result = run_in_process(command, run_dir, *extra.get(command, []), *choice)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(path) in result.stderr and no_traceback(result)
    assert not (tmp_path / "m.ts").exists()


@pytest.mark.slow
def test_resume_refuses_a_damaged_checkpoint_and_changes_nothing(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    flip_tensor_byte(newest)
    damaged = newest.read_bytes()
    result = run_in_process("run", "--resume", run_dir, "--set", "trainer.epochs=4", "--quiet")
    assert result.returncode == 2, result.stderr
    assert str(newest) in result.stderr and no_traceback(result)
    assert newest.read_bytes() == damaged


# ------------------------------------------------------------------------------ --nproc-per-node (defect 9)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["zero processes", "run dir under a file", "run dir not empty",
                                  "resume with another recipe", "data missing at build"])
def test_a_data_parallel_launch_that_cannot_work_is_one_usage_error(case, trained, tmp_path):
    (tmp_path / "file").write_text("mine")
    args: list[object] = ["run", POPULARITY, "--nproc-per-node", 2, "--run-dir", tmp_path / "run"]
    expected = "cannot create the run dir"
    if case == "zero processes":
        args[3], expected = 0, "--nproc-per-node"
    elif case == "run dir under a file":
        args[-1] = tmp_path / "file" / "run"
    elif case == "run dir not empty":
        args[-1], expected = trained, "already exists and is not empty"
    elif case == "resume with another recipe":
        args, expected = ["run", "--resume", trained, "--nproc-per-node", 2, "--set", "optimizer.lr=0.5"], "optimizer.lr"
    else:
        args = ["run", RECIPES / "catfish_simplenet.toml", "--nproc-per-node", 2, "--run-dir", tmp_path / "run",
                "--set", f"dataset.root={tmp_path / 'no-images'}"]
        expected = str(tmp_path / "no-images")
    if case in ("resume with another recipe", "data missing at build"):  # launched: a rank says why
        result = run_pipeforge(*args, "--quiet", cwd=tmp_path, timeout=300)
    else:  # refused before anything is launched
        result = run_in_process(*args, "--quiet", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in result.stderr and no_traceback(result), result.stderr[-3000:]
    assert (tmp_path / "file").read_text() == "mine"
    assert not (tmp_path / "runs").exists()


def test_more_processes_than_gpus_is_refused_before_launching(tmp_path, monkeypatch, capsys):
    import torch

    from pipeforge import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code = cli.main(["run", str(POPULARITY), "--nproc-per-node", "2", "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "--nproc-per-node 2 needs a GPU for each process and 1 is available" in message
    assert not (tmp_path / "run").exists()
