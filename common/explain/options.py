"""The `explain` command line, shared by both models: what to explain, how, and where the outputs go."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from common.data.sources import SPLIT_NAMES
from common.errors import ConfigError
from common.explain.inputs import files_inputs, split_inputs
from common.explain.occlusion import OcclusionConfig
from common.explain.run import METHODS, ExplainConfig, ModelHooks, default_out, explain_run
from common.runs.record import is_run_dir, read_record


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained run directory")
    parser.add_argument("inputs", nargs="*", type=Path, help="NIfTI files")
    parser.add_argument("--manifest", type=Path, help="CSV with a 'path' column (relative to the CSV)")
    parser.add_argument("--split", choices=SPLIT_NAMES,
                        help="explain a split of the run's own data (volumes from its cache, labels known)")
    parser.add_argument("--limit", type=int, help="only the first N inputs")
    parser.add_argument("--method", choices=METHODS, default="gradcam",
                        help="gradcam: gradients at the model's spatial features (ResNet: a residual stage; "
                             "transformer: the token grid); occlusion: probability drop when a cube is hidden "
                             "(default: gradcam)")
    parser.add_argument("--target", help="class whose evidence to map (default: each input's predicted class)")
    parser.add_argument("--gradcam-layer",
                        help="gradcam: the layer whose activations are weighed (ResNet: layer2..layer11, the "
                             "stage outputs; default layer5, at half the input resolution; layer11 is the last "
                             "and coarsest; the transformer has one grid)")
    defaults = OcclusionConfig()
    parser.add_argument("--occlusion-size", type=int, default=defaults.size,
                        help=f"occlusion cube edge in model-grid voxels (default: {defaults.size})")
    parser.add_argument("--occlusion-stride", type=int,
                        help="step between cubes (default: half the cube edge)")
    parser.add_argument("--occlusion-baseline", type=float,
                        help="value inside the cube (default: the mean of the volume's foreground, i.e. average "
                             "tissue rather than a hole of air)")
    parser.add_argument("--random-weights", action="store_true",
                        help="same architecture with re-initialised weights (the randomisation sanity check); "
                             "default --out then ends in -random")
    parser.add_argument("--batch-size", type=int, default=16, help="volumes per forward pass (default: 16)")
    parser.add_argument("--cache-dir", type=Path, help="cache root of the run's data, for --split "
                                                       "(default: $VOLCLS_CACHE or ./.cache)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/explain/METHOD[-random])")


def explain_config(args: argparse.Namespace) -> ExplainConfig:
    occlusion = OcclusionConfig(size=args.occlusion_size, stride=args.occlusion_stride,
                                baseline=args.occlusion_baseline, batch_size=args.batch_size)
    return ExplainConfig(method=args.method, target=args.target, occlusion=occlusion,
                         random_weights=args.random_weights, batch_size=args.batch_size,
                         gradcam_layer=args.gradcam_layer)


def run_explain(args: argparse.Namespace, model: str, make_hooks: Callable[..., ModelHooks]) -> Path:
    """Check everything cheap first, then load inputs and model, then compute and write."""
    config = explain_config(args)
    sources = sum(bool(x) for x in (args.inputs, args.manifest, args.split))
    if sources != 1:
        raise ConfigError("name the inputs one way: NIfTI files, --manifest, or --split")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be >= 1")
    if not is_run_dir(args.run_dir):
        raise ConfigError(f"--run-dir {args.run_dir}: not a run directory (no config.json); explain takes one run")
    record = read_record(args.run_dir)
    if record.model != model:
        raise ConfigError(f"--run-dir {args.run_dir}: trained by {record.model}; use python -m {record.model} explain")
    config.target_index(record.data.classes)
    out = args.out or default_out(args.run_dir, config)
    if args.split:
        items = split_inputs(args.run_dir, record, args.split, args.cache_dir)
    else:
        items = files_inputs(args.inputs, args.manifest, record.data.preprocess)
    items = items[:args.limit] if args.limit else items
    hooks = make_hooks(args.run_dir, record.data.classes, random_weights=config.random_weights,
                       gradcam_layer=config.gradcam_layer)
    from common.explain.checks import lesion_masks

    # Where the lesions are known (the demo's planted ones), the figures outline them.
    return explain_run(items, hooks, config, out, run_dir=args.run_dir, lesions=lesion_masks(record, None),
                       threshold=record.outcome.threshold if record.outcome else None)
