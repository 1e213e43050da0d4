"""Saliency maps, framework-free: occlusion, model grid -> scan grid, outputs a viewer opens, and checks.

The gradient methods live with their models (torch_resnet/explain.py, tf_transformer/explain.py); both hand
this package (N, D, H, W) maps on the model grid.
"""
