"""`pipeforge evaluate`, `predict` and `export` on finished runs, through the installed CLI.

The runs they read are trained once per module, and most commands run, through the same CLI
code, in this process (`run_in_process`): an interpreter that imports torch again for each
command was most of this file's time. A command of each kind runs as a process too."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import RECIPES, run_in_process, run_pipeforge
from datagen import FASHION_MNIST_CLASSES, write_fashion_mnist, write_popularity_csv

pytestmark = pytest.mark.slow  # trains through subprocesses: `-m "not slow"` leaves it out

ONNX_MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING), reason=f"ONNX export needs pipeforge[onnx]; missing: {', '.join(ONNX_MISSING)}"
)


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def popularity_run(tmp_path_factory) -> Path:
    """The popularity recipe exactly as shipped (seed 0, 10 epochs; a few seconds)."""
    run_dir = tmp_path_factory.mktemp("popularity") / "run"
    result = run_in_process("run", RECIPES / "popularity_mlp.toml", "--run-dir", run_dir, "--quiet")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory) -> tuple[Path, Path]:
    """A FashionMNIST MLP trained on generated idx files; returns (run dir, data root)."""
    base = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(base / "data")
    run_dir = base / "run"
    result = run_in_process(
        "run", RECIPES / "fashion_mnist_mlp.toml", "--run-dir", run_dir, "--quiet",
        "--set", f"dataset.root={base / 'data'}", "--set", "dataset.download=false",
        "--set", "optimizer.lr=0.1", "--set", "trainer.epochs=3",
    )
    assert result.returncode == 0, result.stderr
    return run_dir, base / "data"


def fashion_test_image(data_root: Path, label: int) -> np.ndarray:
    """The first test image of class `label`, read back from the generated idx files."""
    raw = data_root / "FashionMNIST" / "raw"
    labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    images = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    return images.reshape(-1, 28, 28)[int(np.flatnonzero(labels == label)[0])]


# ------------------------------------------------------------------------------ predict


def test_predict_a_literal_and_csv_and_json_files(popularity_run, tmp_path):
    # The seed's example product first: 7.5 + 3.0 > 10, so the data rule says Popular (the
    # trained model gives it p ≈ 0.6; the run is deterministic from seed 0). The files hold
    # clearly separable products, far from price + rating = 10. One line per sample, in order.
    csv_file = write_popularity_csv(tmp_path / "products.csv", [(9.5, 4.8), (1.5, 1.2)])
    json_file = tmp_path / "products.json"
    json_file.write_text(json.dumps([[2.0, 1.5], {"price": 9.0, "rating": 4.5}]))
    result = run_pipeforge("predict", popularity_run, "[[7.5, 3.0]]", csv_file, json_file)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["Popular", "Popular", "Not Popular", "Not Popular", "Popular"]


def test_predict_json_gives_probabilities(popularity_run):
    result = run_in_process("predict", popularity_run, "[[9.5, 4.8], [1.5, 1.2]]", "--json")
    assert result.returncode == 0, result.stderr
    samples = json.loads(result.stdout)
    assert [s["class"] for s in samples] == ["Popular", "Not Popular"]
    assert [s["index"] for s in samples] == [1, 0]
    for sample in samples:
        probabilities = sample["probabilities"]
        assert set(probabilities) == {"Not Popular", "Popular"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert max(probabilities, key=probabilities.get) == sample["class"]


def test_predict_with_a_checkpoint_path(popularity_run):
    step = sorted((popularity_run / "checkpoints").glob("step-*.pt"))[-1]
    result = run_in_process("predict", popularity_run, "[[9.5, 4.8]]", "--checkpoint", step)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["Popular"]


def test_predict_names_a_bad_csv_line(popularity_run, tmp_path):
    bad = tmp_path / "prices.csv"
    bad.write_text("price,rating\n7.5,3.0\n8.0,lots\n")
    result = run_in_process("predict", popularity_run, bad)
    assert result.returncode == 2
    assert f"{bad}: line 3: rating must be a number" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_predict_an_ankle_boot_image(fashion_run, tmp_path):
    run_dir, data_root = fashion_run
    pixels = fashion_test_image(data_root, 9)
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"
    png = tmp_path / "boot.png"
    Image.fromarray(pixels, "L").save(png)
    # Any PIL-readable image: an RGB JPEG at twice the size is made gray and 28 x 28.
    jpeg = tmp_path / "boot.jpg"
    Image.fromarray(pixels, "L").convert("RGB").resize((56, 56)).save(jpeg)
    result = run_pipeforge("predict", run_dir, png, jpeg)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["Ankle boot", "Ankle boot"]


def test_predict_refuses_a_corrupt_image(fashion_run, tmp_path):
    run_dir, data_root = fashion_run
    good = tmp_path / "good.png"
    Image.fromarray(fashion_test_image(data_root, 0), "L").save(good)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:60])
    result = run_in_process("predict", run_dir, good, corrupt)
    assert result.returncode == 2
    assert f"{corrupt}: cannot read it as an image" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_predict_on_a_dataset_without_an_input_reader(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[run]\nname = "tiny"\n[dataset]\nname = "synthetic_classification"\nn_train = 64\n'
        'n_val = 16\nfeatures = 4\nclasses = 2\n[model]\nname = "mlp"\nin_features = 4\n'
        'hidden = [8]\n[optimizer]\nname = "sgd"\nlr = 0.1\n'
    )
    run_dir = tmp_path / "run"
    assert run_in_process("run", recipe, "--run-dir", run_dir, "--quiet").returncode == 0
    result = run_in_process("predict", run_dir, "[[1, 2, 3, 4]]")
    assert result.returncode == 2
    assert "dataset 'synthetic_classification' does not support predict" in result.stderr


# ------------------------------------------------------------------------------ evaluate


def test_evaluate_reproduces_the_final_metrics(popularity_run):
    final = metrics_rows(popularity_run)[-1]
    result = run_in_process("evaluate", popularity_run, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["splits"] == ["test"]
    assert report["weights"] == str(popularity_run / "model.pt")
    assert report["metrics"]["test_accuracy"] == final["test_accuracy"]
    assert report["metrics"]["test_loss"] == pytest.approx(final["test_loss"], rel=1e-5)


def test_evaluate_best_and_last_checkpoints(popularity_run):
    rows = metrics_rows(popularity_run)
    best = json.loads(run_in_process("evaluate", popularity_run, "--checkpoint", "best", "--json").stdout)
    # best.pt is the epoch with the lowest test loss (the recipe's default best_metric).
    best_row = min(rows, key=lambda row: row["test_loss"])
    assert best["weights"].endswith("best.pt")
    assert best["metrics"]["test_accuracy"] == best_row["test_accuracy"]
    assert best["metrics"]["test_loss"] == pytest.approx(best_row["test_loss"], rel=1e-5)
    # The newest step checkpoint is written at the end of the last epoch.
    last = json.loads(run_in_process("evaluate", popularity_run, "--checkpoint", "last", "--json").stdout)
    assert Path(last["weights"]).name.startswith("step-")
    assert last["metrics"]["test_accuracy"] == rows[-1]["test_accuracy"]


def test_last_says_when_it_falls_back_to_an_older_checkpoint(popularity_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(popularity_run, copy)
    (newest,) = [p for p in (copy / "checkpoints").glob("step-*.pt")]
    (copy / "checkpoints" / "step-99999999.pt").write_bytes(b"not a checkpoint")
    result = run_pipeforge("evaluate", copy, "--checkpoint", "last", "--json")  # a process: its log on stderr
    assert result.returncode == 0, result.stderr
    assert Path(json.loads(result.stdout)["weights"]).name == newest.name
    assert "step-99999999.pt cannot be read" in result.stderr and newest.name in result.stderr


def test_evaluate_prints_a_table_and_never_overwrites_its_json_file(popularity_run, tmp_path):
    target = tmp_path / "metrics.json"
    result = run_pipeforge("evaluate", popularity_run, "--split", "train", "--split", "test", "-o", target)
    assert result.returncode == 0, result.stderr
    written = json.loads(target.read_text())
    assert written["splits"] == ["train", "test"]
    assert written["metrics"]["test_accuracy"] == metrics_rows(popularity_run)[-1]["test_accuracy"]
    # Without --json the same numbers print as a table: one row per split.
    rows = [line.strip("│ ").split(" │ ") for line in result.stdout.splitlines() if line.startswith("│")]
    table = {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows}
    assert table["test"][-1] == f"{written['metrics']['test_accuracy']:.4f}"
    assert table["train"][-1] == f"{written['metrics']['train_accuracy']:.4f}"
    before = target.read_text()
    again = run_in_process("evaluate", popularity_run, "-o", target)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert target.read_text() == before


def test_evaluate_an_unfinished_run_points_to_checkpoints(popularity_run, tmp_path):
    unfinished = tmp_path / "run"
    shutil.copytree(popularity_run, unfinished)
    (unfinished / "model.pt").unlink()
    result = run_in_process("evaluate", unfinished)
    assert result.returncode == 2
    assert "model.pt" in result.stderr and "--checkpoint last" in result.stderr


# ------------------------------------------------------------------------------ export


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
@pytest.mark.parametrize("which", ["popularity", "fashion"])
def test_export_round_trip(fmt, which, popularity_run, fashion_run):
    run_dir = popularity_run if which == "popularity" else fashion_run[0]
    target = run_dir / ("model.ts" if fmt == "torchscript" else "model.onnx")
    result = run_in_process("export", run_dir, "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert f"wrote {target}" in result.stdout
    assert "check passed" in result.stdout and "max abs difference" in result.stdout
    assert "tolerance" in result.stdout
    # The file is usable on its own, with any batch size.
    import torch

    batch = torch.rand(3, 2) * 5 if which == "popularity" else torch.rand(3, 1, 28, 28)
    if fmt == "torchscript":
        outputs = torch.jit.load(str(target))(batch)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    assert tuple(outputs.shape) == (3, 2 if which == "popularity" else 10)


def test_export_never_overwrites_a_file(popularity_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(popularity_run, run_dir, ignore=shutil.ignore_patterns("model.ts", "model.onnx"))
    mine = run_dir / "model.ts"
    mine.write_text("the user's own file")
    result = run_in_process("export", run_dir, "--format", "torchscript")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert mine.read_text() == "the user's own file"


@needs_onnx
def test_onnx_check_is_skipped_without_onnxruntime(popularity_run, tmp_path, monkeypatch):
    # An `onnxruntime` that cannot be imported (None in sys.modules: `import onnxruntime` raises
    # ImportError, even where another test imported it): as if it were not installed.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    target = tmp_path / "model.onnx"
    result = run_in_process("export", popularity_run, "--format", "onnx", "-o", target)
    assert result.returncode == 0, result.stderr
    assert target.is_file()
    assert "check skipped: onnxruntime is not installed" in result.stdout


# ------------------------------------------------------------------------------ unsafe files


class Payload:
    """Unpickling this would run `open(marker, "w")`: the side effect the test looks for."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(("command", "writer"), [
    ("evaluate", "torch_save"), ("export", "torch_save"), ("predict", "raw_pickle"),
])
def test_a_malicious_checkpoint_is_refused_and_runs_no_code(command, writer, popularity_run, tmp_path):
    import torch

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    payload = {"format": "pipeforge-checkpoint", "model": Payload(marker)}
    if writer == "torch_save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    exported = tmp_path / "model.ts"
    extra = {"export": ["--format", "torchscript", "-o", exported], "predict": ["[[7.5, 3.0]]"]}
    result = run_in_process(command, popularity_run, *extra.get(command, []), "--checkpoint", evil)
    assert result.returncode == 2
    assert str(evil) in result.stderr and "no code was run" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not exported.exists()
