"""The GPU benchmark's parts, checked on a CPU: batch search, out-of-memory detection, memory plans
(meta-device counts and the transformer's analytic formula against real saved tensors), the loader's
data-wait measurement, and the whole prepared script end to end at 32^3."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.bench.capacity import (
    MemoryPlan,
    batch_for_memory,
    bf16_dense_peak,
    is_out_of_memory,
    largest_batch,
    plan_batches,
)

ROOT = Path(__file__).resolve().parents[1]


# ---- batch search ---------------------------------------------------------------------------------

@pytest.mark.parametrize("limit, cap", [(5, 64), (1, 64), (64, 64), (37, 64), (3, 3), (100, 8)])
def test_the_search_finds_the_largest_batch_that_fits_in_few_trials(limit, cap):
    search = largest_batch(lambda batch: batch <= limit, cap)
    assert search.largest == min(limit, cap)
    assert search.capped == (limit >= cap)
    assert len(search.trials) <= 2 * math.ceil(math.log2(cap)) + 1
    assert all(ok == (batch <= limit) for batch, ok in search.trials)
    assert max(b for b, _ in search.trials) <= cap


def test_the_search_reports_zero_when_nothing_fits():
    search = largest_batch(lambda batch: False, 16)
    assert (search.largest, search.trials, search.capped) == (0, ((1, False),), False)
    with pytest.raises(ValueError, match="max_batch"):
        largest_batch(lambda batch: True, 0)


def test_out_of_memory_is_recognised_across_frameworks():
    class ResourceExhaustedError(Exception):
        pass

    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))
    assert is_out_of_memory(ResourceExhaustedError("OOM when allocating tensor with shape[8,4,8000,8000]"))
    assert not is_out_of_memory(ValueError("Input 0 of layer conv3d is incompatible with the layer"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_peak_table_matches_the_most_specific_name_first():
    assert bf16_dense_peak("NVIDIA H200") == 989e12
    assert bf16_dense_peak("NVIDIA H100 PCIe") == 756e12
    assert bf16_dense_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_dense_peak("NVIDIA L40S") == 362e12 and bf16_dense_peak("NVIDIA L4") == 121e12
    assert bf16_dense_peak("Quadro K620") is None


def test_plan_batches_fill_ninety_percent_of_each_gpu():
    plan = plan_batches(MemoryPlan(model="m", input_shape=(8, 8, 8), precision="fp32", fixed_bytes=4 * 10**9,
                                   activation_bytes=10 * 10**9, checkpointed_bytes=3 * 10**9, method="test"))
    # 24 GB: 21.6 - 4 = 17.6 GB usable -> 1 sample of 10 GB, 5 of 3 GB; 141 GB: 122.9 -> 12 and 40.
    assert plan.batches["24"] == {"off": 1, "on": 5}
    assert plan.batches["141"] == {"off": 12, "on": 40}
    assert batch_for_memory(1e9, 2 * 10**9, 10) == 0  # the fixed part alone does not fit


# ---- memory plans -----------------------------------------------------------------------------------

def test_saved_tensor_count_of_a_linear_layer_is_its_input():
    import torch

    from torch_resnet.memory import saved_tensor_bytes

    layer = torch.nn.Linear(4, 3)
    assert saved_tensor_bytes(layer, torch.ones(2, 4, requires_grad=False)) == 2 * 4 * 4  # weights excluded
    with torch.device("meta"):
        meta_layer, meta_x = torch.nn.Linear(4, 3), torch.ones(5, 4)
    assert saved_tensor_bytes(meta_layer, meta_x) == 5 * 4 * 4


def test_resnet_plan_on_the_meta_device_equals_real_tensors():
    from torch_resnet.config import preset
    from torch_resnet.memory import activation_bytes, memory_plan

    config = preset("tiny").with_data(input_shape=(16, 16, 16), num_classes=2)
    for checkpointing in (False, True):
        assert activation_bytes(config, checkpointing=checkpointing) == \
            activation_bytes(config, checkpointing=checkpointing, device="cpu")
    plan = memory_plan(preset("reference").with_data(input_shape=(64, 64, 64), num_classes=3))
    assert 0 < plan.checkpointed_bytes < plan.activation_bytes / 2
    bigger = memory_plan(preset("reference").with_data(input_shape=(128, 128, 128), num_classes=3))
    assert 7 < bigger.activation_bytes / plan.activation_bytes < 9  # activations scale with voxels (8x)
    assert [row["off"] for row in bigger.batches.values()] == sorted(row["off"] for row in bigger.batches.values())


def test_transformer_parameter_formula_equals_keras():
    from tf_transformer.config import preset
    from tf_transformer.memory import parameter_count
    from tf_transformer.model import build_transformer

    recipe = {"pooling": "token", "layer_scale": 0.1, "drop_path": 0.1, "stem_norm": True}
    for name, overrides in (("tiny", {}), ("small", {}), ("tiny", {"pooling": "flatten"}), ("tiny", recipe),
                            ("small_recipe", {})):
        config = preset(name, **overrides).with_data(input_shape=(16, 16, 16), num_classes=3)
        assert parameter_count(config) == build_transformer(config).count_params()


_SAVED_BY_KERAS = """
import json, sys, torch
from tf_transformer.config import preset
from tf_transformer.model import build_transformer
from tf_transformer.memory import activation_elements
out = {}
for name, shape in (("tiny", 16), ("small", 28)):
    config = preset(name).with_data(input_shape=(shape,) * 3, num_classes=3)
    model = build_transformer(config)
    def saved(batch):
        seen = {}
        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(batch, shape, shape, shape, 1), training=True)
        return sum(seen.values())
    out[name] = [saved(2) - saved(1), 4 * activation_elements(config)]
print(json.dumps(out))
"""


def test_transformer_activation_formula_matches_the_tensors_keras_saves():
    """The analytic count against torch's own record of what Keras layers save (torch backend, batch 2 - 1)."""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", _SAVED_BY_KERAS], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, (measured, formula) in json.loads(done.stdout.strip().splitlines()[-1]).items():
        assert formula == pytest.approx(measured, rel=0.02), name


def test_flash_attention_removes_the_quadratic_term():
    from tf_transformer.config import preset
    from tf_transformer.memory import activation_elements

    seed = preset("reference").with_data(input_shape=(192, 192, 192), num_classes=3)
    assert seed.num_tokens == 8000
    saved = activation_elements(seed) - activation_elements(seed, flash_attention=True)
    assert saved == seed.num_blocks * (3 * seed.num_heads * 8000**2 - seed.num_heads * 8000)


# ---- data wait -------------------------------------------------------------------------------------------

def test_a_training_epoch_measures_how_long_it_waited_for_data(make_manifest, cache_root):
    from common.data.batches import EpochBatches
    from common.data.dataset import prepare_dataset
    from common.data.preprocess import PreprocessConfig
    from common.runs.config import TrainConfig
    from common.runs.record import PrecisionDecision
    from torch_resnet.config import preset
    from torch_resnet.distributed import DistContext
    from torch_resnet.options import TorchOptions
    from torch_resnet.train import TorchAdapter

    dataset = prepare_dataset(make_manifest(n_subjects=10), label_column="label",
                              preprocess=PreprocessConfig(shape=(16, 16, 16)), cache_root=cache_root, progress=False)
    config = preset("tiny").with_data(input_shape=(16, 16, 16), num_classes=2)
    adapter = TorchAdapter(config, TrainConfig(batch_size=2), TorchOptions(channels_last=False),
                           PrecisionDecision("fp32", "fp32", "test"), DistContext(), dataset.classes, dataset)
    batches = EpochBatches(dataset.split("train"), batch_size=2, seed=0, epoch=0)

    class SlowLoader:  # every batch takes 0.2 s to "read": the loop must wait at least for the first
        def __len__(self):
            return 2

        def __getitem__(self, step):
            time.sleep(0.2)
            return batches[step]

    stats = adapter.fit_epoch(SlowLoader(), learning_rate=1e-3, on_step=lambda loss: None)
    # the clock starts just after the first read was submitted, so it sees most (not all) of its 0.2 s
    assert stats.data_wait_seconds >= 0.1
    assert stats.samples == 4 and np.isfinite(stats.loss)


# ---- the prepared script -------------------------------------------------------------------------------

def test_the_script_always_finishes_and_reports_every_row(tmp_path):
    """With no budget every row is skipped, and the JSON and the page are still written."""
    from common.bench.gpu import main

    assert main(["--device", "cpu", "--shape", "32", "--budget-s", "0", "--json-dir", str(tmp_path),
                 "--out", str(tmp_path / "gpu.md")]) == 0
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert set(rows) >= {"plan-resnet", "plan-vit", "resnet-32-plain", "resnet-32-fast", "vit-32-flash-false",
                         "vit-32-flash-true", "loader-32"}
    assert all(r["error"].startswith("skipped") for r in rows.values())
    page = (tmp_path / "gpu.md").read_text()
    assert "| 32^3 | plain | failed: skipped" in page


def test_the_preset_option_reaches_every_capacity_row_and_only_those():
    from common.bench.gpu import plan_rows

    def capacity_rows(rows):  # torch_resnet.bench takes `capacity`, tf_transformer.bench `--capacity`
        return [r for r in rows if "capacity" in r.args or "--capacity" in r.args]

    rows = plan_rows("cuda", (128,), 64, 3, "torch", True, 128, 10, preset="small")
    capacity = capacity_rows(rows)
    assert [r.key for r in capacity] == ["resnet-128-plain", "resnet-128-fast", "resnet-128-compiled",
                                         "vit-128-flash-false", "vit-128-flash-true"]
    for row in capacity:
        assert row.args[row.args.index("--preset") + 1] == "small", row
    plans = [r.args for r in rows if r.key.startswith("plan-")]
    assert len(plans) == 2 and all("--preset" not in args for args in plans)  # always the reference network's
    default = capacity_rows(plan_rows("cuda", (128,), 64, 3, "torch", False, 128, 10))
    assert len(default) == 4 and all(r.args[r.args.index("--preset") + 1] == "reference" for r in default)


@pytest.mark.slow(minutes=2)
def test_the_gpu_benchmark_runs_end_to_end_on_a_cpu(tmp_path):
    """`--device cpu --shape 16 --preset tiny`: the same script and rows a GPU runs, so it cannot break unseen.
    The tiny networks go through every step the reference ones do (search, timing, memory, flash attention
    on and off); the reference transformer's XLA compilation alone took 45 s a row on a 2-core CPU."""
    out = tmp_path / "BENCHMARKS-gpu.md"
    # generous time limits: on a loaded CPU a row may take minutes, and this test is about the rows working
    done = subprocess.run([sys.executable, "-m", "common.bench.gpu", "--device", "cpu", "--shape", "16", "--steps",
                           "1", "--preset", "tiny", "--json-dir", str(tmp_path), "--out", str(out), "--budget-s", "2400",
                           "--row-limit-s", "900"], cwd=ROOT, capture_output=True, text=True, timeout=2700)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    failed = {k: r["error"] for k, r in rows.items() if "error" in r}
    assert not failed
    for key in ("resnet-16-plain", "resnet-16-fast", "vit-16-flash-false", "vit-16-flash-true"):
        assert rows[key]["batch"] == 2 and rows[key]["samples_per_second"] > 0 and rows[key]["peak_memory_bytes"] > 0
        assert rows[key]["preset"] == "tiny"
    assert rows["plan-resnet"]["batches"]["141"]["on"] > rows["plan-resnet"]["batches"]["141"]["off"]
    assert rows["loader-32"]["steps"] > 0 and 0 <= rows["loader-32"]["data_wait_fraction"] < 1
    page = out.read_text()
    assert "failed" not in page and "## Training memory of the reference presets at 192^3" in page
    assert "## ResNet `tiny`: largest batch" in page and "## Transformer `tiny`: largest batch" in page


# ---- torch.compile by default where it pays back ----------------------------------------------------------

class FakeProbe:
    """Eager 2.0 s/step (batch 8); compiled 1.6 s/step after an 80 s compilation: paid back after 200 steps."""

    batch_size = 8

    def __init__(self):
        self.asked: list[str] = []

    def __call__(self, candidates, warmups=None):
        self.asked += candidates
        table = {"fp32/channels_last": (4.0, 1.0), "fp32/channels_last/compiled": (5.0, 81.0)}
        if warmups is not None:
            warmups.update({c: table[c][1] for c in candidates})
        return {c: table[c][0] for c in candidates}


def test_compile_is_chosen_only_for_runs_long_enough_to_pay_it_back():
    from torch_resnet.train import resolve_compile

    def decide(steps, requested=None, probe=None):
        probe = probe or FakeProbe()
        return resolve_compile(requested, precision="fp32", channels_last=True, planned_steps=steps, probe=probe), probe

    (chosen, why), probe = decide(250)  # 500 s of eager training: not even worth probing
    assert not chosen and "not probed" in why and probe.asked == ["fp32/channels_last"]
    (chosen, why), _ = decide(500)  # pays back after 200 steps; 500 > 2 x 200
    assert chosen and "pays back after 200 steps, this run has 500" in why
    (chosen, why), probe = decide(350)  # 700 s eager, so probed, but under twice the payback
    assert not chosen and "fp32/channels_last/compiled" in probe.asked
    assert decide(10_000, requested=False)[0] == (False, "--no-compile given")
    assert resolve_compile(None, precision="fp32", channels_last=True, planned_steps=10_000, probe=None)[0] is False


def test_probe_keeps_each_candidates_warmup(tmp_path):
    from common.runs.probe import timed_probe

    clock = iter(range(1000))
    warmups: dict = {}
    cache = tmp_path / "probe.json"
    timed_probe(["a"], lambda c: (lambda: None), batch_size=2, cache_file=cache, timer=lambda: next(clock),
                warmups=warmups)
    assert warmups == {"a": 1.0}
    again: dict = {}
    timed_probe(["a"], lambda c: pytest.fail("cached: not measured again"), batch_size=2, cache_file=cache,
                warmups=again)
    assert again == {"a": 1.0}


def test_only_out_of_memory_counts_as_not_fitting():
    from common.bench.capacity import runs_in_memory

    freed = []

    def oom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB")

    def bug():
        raise ValueError("shapes (2, 3) and (4, 5) not aligned")

    assert runs_in_memory(lambda: None, lambda: freed.append(1)) is True
    assert runs_in_memory(oom, lambda: freed.append(2)) is False
    with pytest.raises(ValueError, match="not aligned"):
        runs_in_memory(bug, lambda: freed.append(3))
    assert freed == [1, 2, 3]  # the attempt's memory is freed whatever happened


_WITHOUT_DATA_STACK = """
import runpy, sys
for name in ("nibabel", "sklearn", "scipy", "tensorflow", "matplotlib", "seaborn", "tqdm"):
    sys.modules[name] = None  # as on a borrowed GPU machine: any import of these fails
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("module, args", [
    ("torch_resnet.bench", ["capacity", "--device", "cpu", "--shape", "16", "--max-batch", "1", "--steps", "1"]),
    ("tf_transformer.bench", ["--capacity", "--preset", "tiny", "--shape", "16", "--max-batch", "1", "--steps", "1"]),
    ("torch_resnet.bench", ["plan", "--shape", "32"]),
])
def test_gpu_rows_need_only_numpy_torch_and_keras(module, args):
    done = subprocess.run([sys.executable, "-c", _WITHOUT_DATA_STACK, module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "error" not in json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cached", [
    {"samples_per_second": {"fp32": 1.0, "bf16": 100.0}, "warmup_seconds": {"fp32": 1.0, "bf16": 1.0}},  # implausible
    {"samples_per_second": {"fp32": -1.0, "bf16": 0.0}, "warmup_seconds": {"fp32": 1.0, "bf16": 1.0}},
    {"samples_per_second": {"fp32": "NaN", "bf16": 2.0}, "warmup_seconds": {"fp32": 1.0, "bf16": 1.0}},
    "not json at all",
])
def test_a_damaged_or_edited_probe_cache_is_measured_again(tmp_path, cached):
    import json

    from common.runs.probe import timed_probe

    cache = tmp_path / "probe.json"
    cache.write_text(cached if isinstance(cached, str) else json.dumps(cached).replace('"NaN"', "NaN"))
    measured = []
    speeds = timed_probe(["fp32", "bf16"], lambda c: (lambda: measured.append(c)), batch_size=2, cache_file=cache)
    assert set(measured) == {"fp32", "bf16"}  # measured here, not believed
    assert all(0 < v < float("inf") for v in speeds.values())
    assert "NaN" not in cache.read_text() and "Infinity" not in cache.read_text()


def test_a_directory_in_place_of_the_probe_cache_and_a_reprobe(tmp_path, monkeypatch):
    from common.runs.probe import timed_probe

    folder = tmp_path / "probe.json"
    folder.mkdir()
    assert timed_probe(["a"], lambda c: (lambda: None), batch_size=2, cache_file=folder)["a"] > 0
    assert folder.is_dir()
    cache = tmp_path / "probe2.json"
    timed_probe(["a"], lambda c: (lambda: None), batch_size=2, cache_file=cache)
    monkeypatch.setenv("VOLCLS_REPROBE", "1")
    measured = []
    timed_probe(["a"], lambda c: (lambda: measured.append(c)), batch_size=2, cache_file=cache)
    assert measured  # VOLCLS_REPROBE=1 measures again
