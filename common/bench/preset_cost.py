"""Two facts every section of BENCHMARKS.md shares: the machine's one fp32 matmul peak, and what each
preset costs per training sample at 32^3 and 64^3 (the recipes against `small`, issue 25)."""

from __future__ import annotations

MODEL_LABELS = {"torch_resnet": "ResNet", "tf_transformer": "Transformer"}
BASELINE = ("small", 32)  # the preset and size every cost is compared with: the CPU default at 32^3


def machine_fp32_peak(result: dict) -> tuple[float, dict[str, float]]:
    """The best fp32 matrix-multiply FLOP/s this run measured, and each measurement by library: numpy's,
    torch.mm's and keras.ops.matmul's on each Keras backend. One number, so every "of fp32 peak" in the
    document divides by the same thing."""
    parts = {"numpy/OpenBLAS": result["numpy_matmul_peak_fp32"]}
    resnet = result.get("resnet") or {}
    if "matmul_peak_flops" in resnet:
        parts["torch.mm"] = resnet["matmul_peak_flops"]["fp32"]
    for row in (result.get("vit") or {}).values():
        if "matmul_peak_fp32" in row:
            key = f"keras.ops.matmul on {row['backend']}"
            parts[key] = max(parts.get(key, 0.0), row["matmul_peak_fp32"])
    return max(parts.values()), parts


def render_preset_cost(rows: list[dict], gflop) -> list[str]:
    """The table of `python -m torch_resnet.bench preset` and the transformer's preset throughput rows."""
    if not rows:
        return []
    ok = [r for r in rows if "samples_per_second" in r]
    baseline = {r["model"]: r["samples_per_second"] for r in ok if (r["preset"], r["shape"]) == BASELINE}
    batches = sorted({r["batch"] for r in ok})
    lines = ["## Presets: what the recipes cost per training sample", "",
             f"fp32, batch {'/'.join(map(str, batches))}, median of the timed steps after a warm-up step, one process "
             "each (ResNet: PyTorch eager, NCDHW; transformer: TensorFlow, no XLA). The last column is the time of "
             f"one training sample against `{BASELINE[0]}` at {BASELINE[1]}^3 of the same model (the CPU default): "
             "below 1.00x a sample costs less.", "",
             "| model | preset | input | samples/s | step s | forward FLOPs/sample | time per sample vs "
             f"`{BASELINE[0]}` at {BASELINE[1]}^3 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        label = MODEL_LABELS.get(r.get("model"), r.get("model", "?"))
        if "samples_per_second" not in r:
            lines.append(f"| {label} | `{r.get('preset', '?')}` | {r.get('shape', '?')}^3 | failed: {r.get('error')} "
                         "| | | |")
            continue
        base = baseline.get(r["model"])
        ratio = f"{base / r['samples_per_second']:.2f}x" if base else "-"
        lines.append(f"| {label} | `{r['preset']}` | {r['shape']}^3 | {r['samples_per_second']:.1f} | "
                     f"{r['step_seconds']:.3f} | {gflop(r['forward_flops'], 'FLOP')} | {ratio} |")
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in rows if "command" in r), ""]
    return lines
