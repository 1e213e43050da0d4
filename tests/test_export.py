"""Bundles (`python -m common export` / `predict --bundle`): ONNX graphs plus the run's preprocessing that
score new scans without torch or TensorFlow, with the native `predict`'s probabilities."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_record, write_nifti

from common.cli import main as common_main
from common.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
# Run `python -m common ...` with torch, tensorflow and keras made unimportable.
NO_FRAMEWORK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "tensorflow", "keras"}:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from common.cli import main
code = main(sys.argv[1:])
assert not {"torch", "tensorflow", "keras"} & set(sys.modules), "a framework was imported"
sys.exit(code)
"""


def without_frameworks(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_FRAMEWORK, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def probabilities(csv_path: Path) -> tuple[list[str], np.ndarray]:
    rows = csv_path.read_text().splitlines()[1:]
    return [r.split(",")[1] for r in rows], np.array([[float(v) for v in r.split(",")[2:]] for r in rows])


def train_tiny(package: str, manifest: Path, cache_root: Path, run_dir: Path) -> None:
    import importlib

    main = importlib.import_module(f"{package}.cli").main
    assert main(["train", "--data", str(manifest), "--label-column", "label", "--shape", "16", "16", "16",
                 "--preset", "tiny", "--batch-size", "4", "--epochs", "2", "--cache-dir", str(cache_root),
                 "--run-dir", str(run_dir), "--workers", "1", "--quiet", "--precision", "fp32"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("package", ["torch_resnet", "tf_transformer"])
def test_a_bundle_predicts_as_the_run_does_without_torch_or_tensorflow(package, make_manifest, cache_root,
                                                                       tmp_path, capsys):
    import importlib

    manifest = make_manifest(n_subjects=12)
    run_dir, bundle = tmp_path / "run", tmp_path / "bundle"
    train_tiny(package, manifest, cache_root, run_dir)
    assert common_main(["export", str(run_dir), "--out", str(bundle)]) == 0
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert metadata["model"]["package"] == package and len(metadata["members"]) == 1
    assert set(metadata["files"]) == {"member-0.onnx", "preprocess.json", "classes.json", "README.md"}
    assert "## Intended use" in (bundle / "README.md").read_text()
    result = without_frameworks("predict", "--bundle", bundle, "--manifest", manifest, "--out", tmp_path / "b.csv")
    assert result.returncode == 0, result.stderr[-2000:]
    native = importlib.import_module(f"{package}.cli").main
    assert native(["predict", "--run-dir", str(run_dir), "--manifest", str(manifest), "--out",
                   str(tmp_path / "n.csv")]) == 0
    (bundle_classes, from_bundle), (native_classes, from_run) = (probabilities(tmp_path / "b.csv"),
                                                                 probabilities(tmp_path / "n.csv"))
    assert from_bundle.shape == (12, 2) and np.abs(from_bundle - from_run).max() < 1e-4
    assert bundle_classes == native_classes
    # a bundle whose files changed is refused, naming the file; nothing is written
    classes = bundle / "classes.json"
    classes.write_text('["b", "a"]')
    capsys.readouterr()
    assert common_main(["predict", "--bundle", str(bundle), "--manifest", str(manifest), "--out",
                        str(tmp_path / "t.csv")]) == 2
    assert "classes.json: its checksum differs" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
    assert common_main(["export", str(run_dir), "--out", str(bundle)]) == 2  # never over another bundle
    assert "exists; choose a new folder" in capsys.readouterr().err


def test_export_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    from common.runs.record import write_record

    unfinished = tmp_path / "unfinished"
    write_record(unfinished, fake_record(outcome=False))
    assert common_main(["export", str(unfinished), "--out", str(tmp_path / "b")]) == 2
    assert "unfinished or failed run" in capsys.readouterr().err
    finished = tmp_path / "finished"
    write_record(finished, fake_record())
    assert common_main(["export", str(finished), "--out", str(tmp_path / "b")]) == 2
    assert "model.pt: the run's selected weights are missing" in capsys.readouterr().err
    assert common_main(["export", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_a_bundle_is_read_only_after_its_checksums(tmp_path):
    from common.export.bundle import read_bundle

    with pytest.raises(DataError, match="not a bundle"):
        read_bundle(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "volcls-bundle/1", "files": {"member-0.onnx": "0"},
                                                        "members": [{"file": "member-0.onnx"}]}))
    with pytest.raises(DataError, match="member-0.onnx: missing from the bundle"):
        read_bundle(tmp_path)


def test_a_4d_scan_is_refused_by_name(tmp_path):
    from common.data.preprocess import PreprocessConfig, preprocess_file

    scan = write_nifti(tmp_path / "dwi.nii.gz", np.ones((8, 8, 8, 3)))
    with pytest.raises(DataError, match="dwi.nii.gz"):
        preprocess_file(scan, PreprocessConfig(shape=(8, 8, 8), normalize="zscore"))


def test_the_speed_table_reports_ratios_and_raw_numbers():
    from common.bench.export_speed import median_seconds, preset_for, render, row

    calls = []
    assert median_seconds(lambda: calls.append(1), warmup=2, repeats=5) >= 0 and len(calls) == 7
    text = render([row("ResNet", "small_recipe", 32, 4, 2, "torch eager", 0.02, 0.01)], "python -m common.bench.export_speed")
    assert "| ResNet | small_recipe | 32³ | 4 | 2 | torch eager | 200.0 | 400.0 | 2.00× | 20.0 | 10.0 |" in text
    assert preset_for(32) == "small_recipe" and preset_for(64) == "small_recipe_strided"
