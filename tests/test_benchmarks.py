import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _makefile_bench_steps() -> list[list[str]]:
    """The commands of the Makefile's run_benchmarks recipe, as `make bench-quick` runs them."""
    recipe = re.search(r"define run_benchmarks\n(.*?)endef", (ROOT / "Makefile").read_text(), re.S).group(1)
    return [line.strip().split()[1:] for line in recipe.splitlines() if line.strip().startswith("$(PY)")]


def _claim_value(benchmarks: str, name: str) -> str | None:
    """The README's claim NAME as read from a BENCHMARKS.md text (None: its section has no such number)."""
    from common.bench.claims import BY_NAME, ClaimError, read_claim

    try:
        return read_claim(benchmarks, BY_NAME[name], "test")
    except ClaimError:
        return None


@pytest.mark.slow(minutes=5)
def test_quick_benchmark_writes_every_section(tmp_path, monkeypatch):
    """`make bench-quick` as a fresh clone runs it: no real data given, so the synthetic demo (the t1-linear
    section says it was skipped, and why)."""
    monkeypatch.delenv("VOLCLS_BENCH_DATA", raising=False)
    out, folder = tmp_path / "BENCH.md", tmp_path / "json"
    steps = _makefile_bench_steps()
    assert [s[1] for s in steps] == ["common.bench.suite", "torch_resnet.bench", "tf_transformer.bench",
                                     "common.bench.suite"]
    for step in steps:
        args = [a.replace("$(BENCH_DIR)", str(folder)).replace("$(1)", "--quick").replace("$(2)", str(out))
                .replace('"$(3)"', "make bench-quick") for a in step]
        done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, (args, done.stderr[-3000:])
    text = out.read_text()
    for heading in ("## Data pipeline", "## ResNet (reference architecture) training throughput",
                    "## ResNet memory of one training step", "## Transformer training throughput by backend",
                    "## Does the loader keep up?", "## Training memory of the reference presets at 192^3, on paper",
                    "## Presets: what the recipes cost per training sample",
                    "## Saliency maps: seconds per volume",
                    "## t1-linear preprocessing (N4 + affine registration to MNI152)"):
        assert heading in text, heading
    assert "failed" not in text
    assert "Skipped: needs T1 brain MRI; synthetic demo" in text and "VOLCLS_BENCH_DATA not set" in text
    assert "2 processes vs 1" in text and "Checkpointing needs" in text
    from common.bench.claims import CLAIMS  # the README's numbers can be read from a fresh render
    # Not measured in quick mode (their patterns are checked on renders of the sections by the tests below):
    # t1-linear (no T1 MRI given), torch.compile, presets at 64^3.
    unmeasured = {"t1_linear_seconds_per_scan", "t1_linear_two_processes", "compile_speedup", "compile_seconds_cold",
                  "compile_payback_steps", "compile_seconds_warm", "resnet_strided_64_flops"}
    for claim in CLAIMS:
        if claim.name not in unmeasured:
            assert _claim_value(text, claim.name) is not None, claim.name
    assert "| torch_resnet | 16^3 |" in text and "| tf_transformer | 16^3 |" in text
    for model in ("ResNet", "Transformer"):  # every preset costed, against `small` at 32^3 (1.00x itself)
        assert f"| {model} | `small` | 32^3 |" in text and f"| {model} | `small_recipe_strided` | 32^3 |" in text


def test_compile_payback_section_renders_both_caches():
    from common.bench.suite import _render_cpu_checks

    timing = {"warmup_seconds": 0.5, "step_seconds": 0.4}
    payback = {"preset": "small", "shape": 32, "batch": 8, "precision": "fp32", "channels_last": True,
               "eager": timing, "compiled_cold": {"warmup_seconds": 50.5, "step_seconds": 0.3},
               "compiled_warm": {"warmup_seconds": 3.5, "step_seconds": 0.3}, "compiled_speedup": 4 / 3,
               "payback_steps": 500.0, "payback_steps_warm": 30.0, "command": "python -m torch_resnet.bench compile"}
    text = "\n".join(_render_cpu_checks({"resnet_compile": payback}))
    assert "**1.33x** faster" in text and "after **500 steps** the first time" in text
    assert "after **30 steps** from a warm cache" in text
    never = "\n".join(_render_cpu_checks({"resnet_compile": {**payback, "payback_steps": None,
                                                              "payback_steps_warm": None}}))
    assert "never (compiled steps are not faster)" in never
    # the README's claims read this section, the payback from either sentence
    assert _claim_value(text, "compile_speedup") == "1.33×" and _claim_value(text, "compile_seconds_cold") == "50 s"
    assert _claim_value(text, "compile_seconds_warm") == "3.5 s"
    assert _claim_value(text, "compile_payback_steps") == "about 500 steps"
    assert _claim_value(never, "compile_payback_steps") == "never (compiled steps were not faster)"


def test_every_fraction_of_fp32_peak_divides_by_one_machine_peak_and_presets_cost_against_small(tmp_path):
    """BENCHMARKS.md states one fp32 peak (the best matmul any library reached in the run) and every
    "of fp32 peak" divides by it; the preset table gives each sample's time against `small` at 32^3."""
    from common.bench.suite import load_results, render

    def write(name, payload):
        (tmp_path / name).write_text(json.dumps(payload))

    write("data.json", {"date": "today", "quick": True, "machine": "a CPU", "matmul_n": 1024,
                        "numpy_matmul_peak_fp32": 100e9, "data": None, "t1_linear": None})
    timing = {"samples_per_second": 1.0, "step_seconds": 1.0, "warmup_seconds": 1.0, "losses": [1.0]}
    write("resnet.json", {"shape": 24, "batch": 2, "steps": 2, "threads": 2, "torch": "x", "command": "c",
                          "matmul_peak_flops": {"fp32": 200e9, "bf16": 800e9},
                          "paths": {"plain": {**timing, "achieved_flops": 100e9, "fraction_of_own_peak": 0.5}}})
    write("vit-0.json", {**timing, "label": "TensorFlow fp32", "backend": "tensorflow", "preset": "small",
                         "shape": 24, "tokens": 8, "batch": 2, "steps": 2, "achieved_flops": 300e9,
                         "matmul_peak_fp32": 400e9, "command": "v"})
    for model, preset, shape, rate in (("torch_resnet", "small", 32, 40.0), ("torch_resnet", "small_recipe_strided",
                                       64, 50.0), ("tf_transformer", "small", 32, 100.0),
                                      ("tf_transformer", "small_recipe_strided", 64, 80.0)):
        write(f"cost-{model}-{preset}-{shape}.json", {"model": model, "preset": preset, "shape": shape, "batch": 8,
                                                      "samples_per_second": rate, "step_seconds": 8 / rate,
                                                      "forward_flops": 1e9, "command": f"{model} {preset}"})
    text = render(load_results(tmp_path), "make bench")
    assert "fp32 matrix-multiply peak of this machine: **400.00 GFLOP/s**" in text
    assert "numpy/OpenBLAS 100.00 GFLOP/s, torch.mm 200.00 GFLOP/s, keras.ops.matmul on tensorflow 400.00" in text
    assert "| plain | 1.000 | 1.00 | 1.0 | 100.00 GFLOP/s | 25% | 50% |" in text  # 100 of the machine's 400
    assert "| TensorFlow fp32 | 1.000 | 1.000 | 1.0 | 300.00 GFLOP/s | 75% |" in text
    assert "| ResNet | `small_recipe_strided` | 64^3 | 50.0 | 0.160 | 1.00 GFLOP | 0.80x |" in text  # 40 / 50
    assert "| Transformer | `small_recipe_strided` | 64^3 | 80.0 | 0.100 | 1.00 GFLOP | 1.25x |" in text
    assert text.index("| ResNet | `small` | 32^3") < text.index("| ResNet | `small_recipe_strided`")
    assert _claim_value(text, "resnet_strided_64_flops") == _claim_value(text, "resnet_small_32_flops") == "1.00 GFLOP"


def test_bench_data_names_a_manifest_and_its_label_column(tmp_path, monkeypatch):
    from common.bench.suite import bench_manifest
    from common.errors import ConfigError

    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,age_group\n")
    monkeypatch.delenv("VOLCLS_BENCH_DATA", raising=False)
    assert bench_manifest() is None
    monkeypatch.setenv("VOLCLS_BENCH_DATA", f"{manifest}:age_group")
    assert bench_manifest() == (manifest, "age_group")
    monkeypatch.setenv("VOLCLS_BENCH_DATA", str(manifest))
    assert bench_manifest() == (manifest, "label")
    monkeypatch.setenv("VOLCLS_BENCH_DATA", str(tmp_path / "missing.csv"))
    with pytest.raises(ConfigError, match=r"VOLCLS_BENCH_DATA=.*missing.csv: .*is not a file"):
        bench_manifest()


def test_t1_linear_section_renders_a_measurement_and_a_skip():
    from common.bench.suite import _render_t1_linear

    measured = {"dataset": "ixi", "volumes": 2, "shape": [32, 32, 32], "nmi_min": 0.5, "nmi_max": 0.6,
                "processes": {"1": {"seconds": 20.0, "seconds_per_volume": 10.0},
                              "2": {"seconds": 12.5, "seconds_per_volume": 6.25}}}
    text = "\n".join(_render_t1_linear(measured))
    assert "| 2 | 12.5 | 6.2 |" in text and "2 processes vs 1: **1.60x**" in text and "0.500-0.600" in text
    assert _claim_value(text, "t1_linear_seconds_per_scan") == "10.0 s"
    assert _claim_value(text, "t1_linear_two_processes") == "1.60×"
    assert "Skipped: needs T1 brain MRI" in "\n".join(_render_t1_linear({"skipped": "needs T1 brain MRI; demo"}))


def test_readme_performance_numbers_are_the_ones_benchmarks_md_measured():
    """Every number the README quotes from BENCHMARKS.md is marked and equal to it (`make bench` rewrites them)."""
    from common.bench.claims import differences, measured, rewrite

    readme = (ROOT / "README.md").read_text()
    values = measured((ROOT / "BENCHMARKS.md").read_text())
    assert differences(readme, values) == []
    assert rewrite(readme, values) == readme


def test_claims_rewrite_a_drifted_number_and_refuse_unknown_or_missing_ones(tmp_path):
    from common.bench.claims import CLAIMS, ClaimError, main, measured

    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    drifted = benchmarks.replace("Checkpointing needs **", "Checkpointing needs **9")  # 36% -> 936%
    readme = tmp_path / "README.md"
    markers = " ".join(f"<!--bench:{claim.name}-->?<!--/bench-->" for claim in CLAIMS)
    readme.write_text(f"Intro.\n{markers}\n")
    (tmp_path / "BENCHMARKS.md").write_text(drifted)
    args = ["--benchmarks", str(tmp_path / "BENCHMARKS.md"), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1 and "?<!--/bench-->" in readme.read_text()  # --check writes nothing
    assert main(args) == 0
    assert "<!--bench:checkpointing_memory-->9" in readme.read_text() and main([*args, "--check"]) == 0

    readme.write_text(readme.read_text() + "<!--bench:no_such_claim-->1<!--/bench-->")
    assert main(args) == 2
    with pytest.raises(ClaimError, match="compile_speedup.*reworded"):
        measured(benchmarks.replace("Compiled steps are", "Compiled steps run"))
    with pytest.raises(ClaimError, match="no section '## Does torch.compile"):
        measured(benchmarks.replace("## Does torch.compile", "## Torch compile"))


def test_run_overheads_measures_both_ways_and_they_agree():
    """The scoring benchmark times the per-resample scikit-learn way and the vectorised way on the same
    resamples, and the two give the same values; the report shows both and their ratio."""
    from common.bench.run_overheads import bootstrap_seconds, render

    bootstrap = bootstrap_seconds(40, repeats=1, n_resamples=30)
    assert set(bootstrap["seconds"]) == {"scikit-learn per resample", "vectorised"}
    assert bootstrap["max_difference"] < 1e-12
    text = render({"command": "c", "date": "d", "machine": "m", "repeats": 1, "bootstrap": bootstrap,
                   "first_step": {"seconds": {"lazy": 2.0, "prebuilt": 1.0},
                                  "all_seconds": {"lazy": [2.0], "prebuilt": [1.0]}}})
    assert "| scikit-learn, one call per resample |" in text and "**2.00x** faster to the first step" in text


@pytest.mark.parametrize("slots", ["lazy", "prebuilt"])
def test_transformer_first_step_is_timed_with_either_optimizer(slots):
    from tf_transformer.bench import first_step

    result = first_step(shape=16, batch=2, preset_name="tiny", optimizer_slots=slots)
    assert result["optimizer_slots"] == slots and result["seconds"] > 0
