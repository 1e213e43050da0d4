"""`python -m torch_resnet train | predict | explain` (multi-GPU: `torchrun --nproc_per_node N -m torch_resnet train ...`)."""

from __future__ import annotations

import argparse

from common.explain.options import add_explain_arguments
from common.export.members import add_export_arguments, export_members
from common.runs.config import TrainConfig
from common.runs.options import (
    Parser,
    add_data_arguments,
    add_predict_arguments,
    add_training_arguments,
    check_predict_arguments,
    configs_from_args,
    run_command,
)
from common.runs.typed import add_arguments, from_namespace
from torch_resnet.config import PRESETS
from torch_resnet.options import TorchOptions


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m torch_resnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="train, select on val, predict val/test, write the run directory")
    add_data_arguments(train)
    add_training_arguments(train, presets=PRESETS, default_preset="small", defaults=TrainConfig())
    add_arguments(train, TorchOptions(), title="pytorch")
    predict = sub.add_parser("predict", help="class probabilities for new NIfTI files from a trained run")
    add_predict_arguments(predict)
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="auto: the GPU if there is one (default: auto)")
    explain = sub.add_parser("explain", help="saliency maps (NIfTI on each scan's grid, PNGs, CSV) from a trained run")
    add_explain_arguments(explain)
    explain.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="auto: the GPU if there is one (default: auto)")
    add_export_arguments(sub)
    sub.add_parser("search-space", help="this model's own search space for `python -m common tune`, as JSON")
    return parser


def main(argv=None) -> int:
    return run_command(lambda: _dispatch(argv))  # the parser's defaults read the environment too


def _dispatch(argv):
    args = build_parser().parse_args(argv)
    commands = {"train": _train, "predict": _predict, "explain": _explain, "export": _export,
                "search-space": _search_space}
    return commands[args.command](args)


def _search_space(args: argparse.Namespace) -> None:
    import json

    from torch_resnet.search_space import SEARCH_SPACE

    print(json.dumps([p.to_dict() for p in SEARCH_SPACE]))


def _export(args: argparse.Namespace) -> None:
    from torch_resnet.export import INPUT_LAYOUT, export_run

    export_members(args, export_run, INPUT_LAYOUT)


def _train(args: argparse.Namespace) -> None:
    data, training, runtime = configs_from_args(args)  # every value checked before any work
    import torch

    from common.runs.options import dataset_for
    from common.runs.typed import parse_overrides
    from torch_resnet.config import ResNetConfig, preset
    from torch_resnet.distributed import barrier, init_distributed, shutdown
    from torch_resnet.train import train

    options = from_namespace(TorchOptions, args)
    model_config = preset(args.preset, **parse_overrides(ResNetConfig, args.model)).with_data(
        input_shape=data.shape, num_classes=2)  # overrides and shape checked before any work
    ctx = init_distributed(options.device)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    try:
        if ctx.is_main:  # rank 0 builds the cache; the others then find it
            dataset = dataset_for(data, progress=not runtime.quiet)
        barrier(ctx)
        if not ctx.is_main:
            dataset = dataset_for(data, progress=False)
        model_config = model_config.with_data(input_shape=dataset.preprocess.shape, num_classes=len(dataset.classes))
        if runtime.check_only:
            if ctx.is_main:
                print(f"checked: options, {args.preset} model config and data ({len(dataset.classes)} classes)")
            return
        train(dataset, preset=args.preset, model_config=model_config, training=training, runtime=runtime,
              options=options, ctx=ctx)
    finally:
        shutdown(ctx)


def _predict(args: argparse.Namespace) -> None:
    check_predict_arguments(args)
    from torch_resnet.predict import predict_files

    out = predict_files(args.run_dir, args.inputs, args.manifest, args.out, batch_size=args.batch_size,
                        workers=args.workers, device=args.device)
    print(f"probabilities: {out}")


def _explain(args: argparse.Namespace) -> None:
    from common.explain.options import run_explain
    from torch_resnet.explain import model_hooks
    from torch_resnet.predict import inference_device
    from torch_resnet.train import MODEL

    device = inference_device(args.device)
    run_explain(args, MODEL, lambda run_dir, classes, **kw: model_hooks(run_dir, classes, device=device, **kw))
