"""The transformer's own search space for `python -m common tune` (the training options' space is common's)."""

from common.tune.space import Param

SEARCH_SPACE = (
    Param("model.drop_path", "float", 0.0, 0.3),  # stochastic depth (DeiT)
    Param("model.layer_scale", "categorical", choices=(0.0, 0.1, 1e-4)),  # LayerScale gain (CaiT); 0: off
)
