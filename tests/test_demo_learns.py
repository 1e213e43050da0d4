"""The default recipe learns the demo: `make train-*` settings, one seed per model and precision.

The bar is the one of the issue "A transformer that learns": test accuracy >= 0.95, fp32 and bf16 for
both models (bf16 is what a CPU with fast bf16 picks, fp32 what the others pick). With the ResNet's old
15-epoch default one run in six stayed at 0.625 on a 2-core AMD EPYC: its demo learning plateaus for a
varying number of epochs before it finds the lesion (issue 11; the 3-seed matrix is in its closing note).
"""

import json

import pytest

from common.runs.hardware import has_bf16_units


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-cache")


@pytest.mark.slow(minutes=1)
@pytest.mark.parametrize("model, precision", [
    ("transformer", "fp32"), ("transformer", "bf16"),
    pytest.param("resnet", "fp32", marks=pytest.mark.slow(minutes=8)),
    pytest.param("resnet", "bf16", marks=pytest.mark.slow(minutes=8))])
def test_default_recipe_learns_the_demo(demo_cache, tmp_path, monkeypatch, model, precision):
    if precision == "bf16" and not has_bf16_units():
        # Emulated bf16 (AVX2 only) trains 11-20x slower than fp32: 40 epochs would hold CI for hours, and the
        # precision probe never picks bf16 on such a CPU, so no default run trains that way there.
        pytest.skip("no AVX512-BF16 or AMX: bf16 is emulated on this CPU and never a default here")
    from tf_transformer.cli import main as vit_main
    from torch_resnet.cli import main as resnet_main

    monkeypatch.setenv("VOLCLS_CACHE", str(demo_cache))
    main = vit_main if model == "transformer" else resnet_main
    run_dir = tmp_path / model
    assert main(["train", "--quiet", "--precision", precision, "--run-dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]
