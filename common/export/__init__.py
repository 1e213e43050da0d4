"""Bundles: a trained run or fold ensemble as ONNX graphs plus everything needed to score a new NIfTI file
without torch or TensorFlow (`python -m common export`, `python -m common predict --bundle`)."""
