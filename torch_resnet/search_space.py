"""The ResNet's own search space for `python -m common tune` (the training options' space is common's)."""

from common.tune.space import Param

SEARCH_SPACE = (
    Param("model.drop_path", "float", 0.0, 0.3),  # stochastic depth of the recipe presets
    Param("model.filters", "categorical", choices=(8, 16, 32)),  # width of every stage
)
