"""Search spaces, typed: the training options common to both models share one space (COMMON_SPACE, here);
each model package declares its own recipe knobs beside its config (`<package>/search_space.py`) and
prints them with `python -m <package> search-space`, so `common` never imports a model package."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass

from common.errors import ConfigError
from common.models import ModelEntry
from common.runs.typed import flag

KINDS = ("log_float", "float", "int", "categorical")
MODEL_PREFIX = "model."  # a model config field, passed as --model KEY=VALUE


@dataclass(frozen=True)
class Param:
    name: str  # a training option's field ("lr") or "model.<field>" of the model config
    kind: str  # log_float | float | int | categorical
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.kind not in KINDS:
            raise ConfigError(f"search space {self.name}: kind '{self.kind}' is not one of {KINDS}")
        if self.kind == "categorical":
            if not self.choices:
                raise ConfigError(f"search space {self.name}: a categorical needs choices")
        elif self.low is None or self.high is None or not self.low < self.high or (
                self.kind == "log_float" and self.low <= 0):
            raise ConfigError(f"search space {self.name}: needs low < high (> 0 on a log scale)")

    def suggest(self, trial):
        """This parameter's value for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log_float")

    def arguments(self, value) -> list[str]:
        """The trainer's command-line options that set `value`."""
        if self.name.startswith(MODEL_PREFIX):
            return ["--model", f"{self.name[len(MODEL_PREFIX):]}={json.dumps(value)}"]
        return [flag(self.name), str(value)]

    def to_dict(self) -> dict:
        return asdict(self)


# The options both trainers take, searched alike for both models (the same space, the same budget).
# Epochs are not searched: they set each trial's cost, which the budget keeps equal (--epochs, one value).
COMMON_SPACE: tuple[Param, ...] = (
    Param("lr", "log_float", 1e-4, 3e-3),
    Param("weight_decay", "log_float", 1e-5, 1e-1),
    Param("label_smoothing", "float", 0.0, 0.2),
    Param("warmup_epochs", "int", 0, 3),
    Param("batch_size", "categorical", choices=(4, 8, 16)),
)


def model_space(model: ModelEntry) -> tuple[Param, ...]:
    """The model package's own parameters (`python -m <package> search-space`, JSON)."""
    result = subprocess.run(model.command("search-space"), capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"{model.package} search-space: exit {result.returncode} "
                          f"({(result.stderr.strip().splitlines() or ['?'])[-1]})")
    try:
        return tuple(Param(**p) for p in json.loads(result.stdout))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{model.package} search-space: not a list of parameters ({exc})") from None


def space_of(model: ModelEntry) -> tuple[Param, ...]:
    return COMMON_SPACE + model_space(model)

