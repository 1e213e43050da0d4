"""The bundle's README.md: a model card (Mitchell et al. 2019, in the spirit of a MONAI bundle's)."""

from __future__ import annotations

from common.evaluation.formatting import fmt


def model_card(metadata: dict) -> str:
    model, data, members = metadata["model"], metadata["data"], metadata["members"]
    classes = ", ".join(f"`{c}`" for c in metadata["output"]["classes"])
    decision = metadata["output"].get("decision", {"rule": "argmax"})
    lines = [f"# {model['label']} ({model['preset']}): {metadata['task']}", "",
             "## Intended use",
             f"Research use: scores 3D volumes (NIfTI) into the classes {classes}, on data like the training data "
             "below. Not a medical device; not validated for diagnosis.", "",
             "## How to run",
             "```bash",
             "python -m common predict --bundle THIS_FOLDER scan1.nii.gz scan2.nii.gz --out probs.csv",
             "python -m common predict --bundle THIS_FOLDER --manifest scans.csv --out probs.csv  # a 'path' column",
             "```",
             "Needs onnxruntime, nibabel and numpy (the volume-classifiers package's preprocessing); torch and "
             "TensorFlow are not used. Each scan is preprocessed exactly as in training (`preprocess.json`), "
             "every member graph gives logits, and the softmax probabilities are averaged over the members.", "",
             "## Input and output",
             f"- input: `{metadata['input']['layout']}` float32, spatial shape {metadata['input']['shape']}, "
             f"{metadata['input']['value_range']}; dynamic batch; ONNX opset {metadata['onnx']['opset']}",
             f"- output: logits over {classes}",
             "- predicted class: " + (f"'{decision['class']}' when its probability is >= {decision['threshold']:.4f} "
                                      "(chosen on val: Youden's J), else the other"
                                      if decision["rule"] == "threshold" else "the most probable (argmax)"), "",
             "## Training data",
             f"- {data.get('credit') or 'source: ' + str(data.get('source'))}",
             f"- content hash `{data.get('content_hash')}`; class counts {data.get('class_counts')}", "",
             "## Test metrics (95 % bootstrap CIs), per member", "",
             "| member | run | fold | seed | n | accuracy | balanced accuracy | ROC AUC |", "|---|---|---|---|---|---|---|---|"]
    for m in members:
        ci = m["test_ci95"]
        cells = [f"{fmt(m['test'][k])} [{fmt((ci.get(k) or [None, None])[0])}, {fmt((ci.get(k) or [None, None])[1])}]"
                 for k in ("accuracy", "balanced_accuracy", "roc_auc")]
        lines.append(f"| {m['file']} | {m['run']} | {m['fold']} | {m['seed']} | {m['test_n']} | " + " | ".join(cells) + " |")
    lines += ["", "## Limits",
              "- Trained on the data above only; other scanners, populations or preprocessing may score worse.",
              "- A fold ensemble's members were each tested on their own held-out fold; the ensemble itself has "
              "no held-out test set.",
              "- Scans are conformed to the training shape and orientation; a 4-D file is refused.", ""]
    return "\n".join(lines)
