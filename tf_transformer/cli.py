"""`python -m tf_transformer train | predict | explain`. The Keras backend comes from KERAS_BACKEND or --backend
(tensorflow by default); keras is imported only after it is set."""

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
from tf_transformer.config import PRESETS
from tf_transformer.keras_state import SUPPORTED_BACKENDS, select_backend
from tf_transformer.options import KerasOptions


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m tf_transformer", description=__doc__)
    parser.add_argument("--backend", choices=SUPPORTED_BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ start-up log (CUDA probing, oneDNN notes); hidden by default")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="train, select on val, predict val/test, write the run directory")
    add_data_arguments(train)
    add_training_arguments(train, presets=PRESETS, default_preset="small", defaults=TrainConfig())
    add_arguments(train, KerasOptions(), title="keras")
    predict = sub.add_parser("predict", help="class probabilities for new NIfTI files from a trained run")
    add_predict_arguments(predict)
    explain = sub.add_parser("explain", help="saliency maps (NIfTI on each scan's grid, PNGs, CSV) from a trained run")
    add_explain_arguments(explain)
    add_export_arguments(sub)
    sub.add_parser("search-space", help="this model's own search space for `python -m common tune`, as JSON")
    return parser


def main(argv=None) -> int:
    return run_command(lambda: _dispatch(argv))  # the parser's defaults read the environment too


def _dispatch(argv):
    args = build_parser().parse_args(argv)
    select_backend("torch" if args.command == "export" else args.backend)  # export on torch: tf_transformer/export.py
    commands = {"train": _train, "predict": _predict, "explain": _explain, "export": _export,
                "search-space": _search_space}
    return commands[args.command](args)


def _search_space(args: argparse.Namespace) -> None:
    import json

    from tf_transformer.search_space import SEARCH_SPACE

    print(json.dumps([p.to_dict() for p in SEARCH_SPACE]))


def _export(args: argparse.Namespace) -> None:
    from tf_transformer.export import INPUT_LAYOUT, export_run

    export_members(args, export_run, INPUT_LAYOUT)


def _train(args: argparse.Namespace) -> None:
    from common.runs.options import dataset_for
    from common.runs.typed import parse_overrides
    from tf_transformer.config import TransformerConfig, preset
    from tf_transformer.startup import start_backend

    data, training, runtime = configs_from_args(args)  # every value checked before any work
    overrides = parse_overrides(TransformerConfig, args.model)
    preset(args.preset, **overrides).with_data(input_shape=data.shape, num_classes=2)  # a preset that cannot take it
    start_backend(verbose=args.verbose)
    options = from_namespace(KerasOptions, args)
    dataset = dataset_for(data, progress=not runtime.quiet)
    model_config = preset(args.preset, **overrides).with_data(input_shape=dataset.preprocess.shape,
                                                              num_classes=len(dataset.classes))
    if runtime.check_only:
        print(f"checked: options, {args.preset} model config and data ({len(dataset.classes)} classes)")
        return
    from tf_transformer.train import train

    train(dataset, preset=args.preset, model_config=model_config, training=training, runtime=runtime, options=options)


def _predict(args: argparse.Namespace) -> None:
    check_predict_arguments(args)
    from tf_transformer.startup import start_backend

    start_backend(verbose=args.verbose)
    from tf_transformer.predict import predict_files

    out = predict_files(args.run_dir, args.inputs, args.manifest, args.out, batch_size=args.batch_size,
                        workers=args.workers)
    print(f"probabilities: {out}")


def _explain(args: argparse.Namespace) -> None:
    from common.explain.options import explain_config, run_explain

    explain_config(args)  # options checked before the backend starts
    from tf_transformer.startup import start_backend

    start_backend(verbose=args.verbose)
    from tf_transformer.explain import model_hooks
    from tf_transformer.train import MODEL

    run_explain(args, MODEL, model_hooks)
