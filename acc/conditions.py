"""The named experimental conditions and the full run configuration (no torch needed to read them)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral, Real

TRAIN_IMAGES = 60_000  # MNIST's training images: the largest batch a step can draw
# The largest learning rate Adam takes: its first step is lr / (1 - beta1) = 10 lr, which torch must
# hold as a float32 (at most 3.4028e38); above this the first step raises instead of training.
MAX_LR = 3.4e37


@dataclass(frozen=True)
class BCLConfig:
    """BCL's settings (see acc/bcl.py)."""

    som_lr: float = 0.001
    neighborhood_k: int = 8
    temperature: float = 5.0
    recompute_every: int = 50


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on besides the seed and the device."""

    condition: str = "bcl-slow"
    input_dim: int = 784
    hidden_dim: int = 64
    batch_size: int = 128
    lr: float = 1e-3
    bcl: BCLConfig | None = field(default_factory=BCLConfig)

    def to_dict(self) -> dict:
        return {
            "model": {"name": "LinearAutoencoder", "input_dim": self.input_dim, "hidden_dim": self.hidden_dim},
            "data": {"dataset": "MNIST", "split": "train", "batch_size": self.batch_size, "drop_last": True},
            "trainer": {"optimizer": "Adam", "lr": self.lr, "loss": "L1"},
            "bcl": asdict(self.bcl) if self.bcl else None,
        }

    @classmethod
    def from_dict(cls, condition: str, d: dict) -> RunConfig:
        """The configuration `to_dict` wrote (a recording's `config`); BadSetting names the first field
        that is missing or out of its range."""
        def get(*names: str):
            value = d
            for i, name in enumerate(names):
                if not isinstance(value, dict) or name not in value:
                    raise BadSetting(f"config.{'.'.join(names[:i + 1])} is missing")
                value = value[name]
            return value

        if not isinstance(d, dict):
            raise BadSetting(f"config must be an object, not {_show(d)}")
        bcl = d.get("bcl")  # (absent: no BCL, as null)
        if bcl is not None:
            if not isinstance(bcl, dict):
                raise BadSetting(f"config.bcl must be an object or null, not {_show(bcl)}")
            known = {f.name for f in fields(BCLConfig)}
            if missing := sorted(known - set(bcl)):
                raise BadSetting(f"config.bcl.{missing[0]} is missing")
            if unknown := sorted(set(bcl) - known, key=str):
                raise BadSetting(f"config.bcl.{unknown[0]} is not a BCL setting")
        cfg = cls(condition=condition, input_dim=get("model", "input_dim"), hidden_dim=get("model", "hidden_dim"),
                  batch_size=get("data", "batch_size"), lr=get("trainer", "lr"),
                  bcl=BCLConfig(**bcl) if bcl is not None else None)
        return check(cfg, names=_RECORDED)


CONDITIONS: dict[str, RunConfig] = {
    "control": RunConfig(condition="control", bcl=None),
    "bcl-slow": RunConfig(condition="bcl-slow", bcl=BCLConfig(som_lr=0.001)),
    "bcl-med": RunConfig(condition="bcl-med", bcl=BCLConfig(som_lr=0.005)),
    "bcl-fast": RunConfig(condition="bcl-fast", bcl=BCLConfig(som_lr=0.01)),
}


class UnknownCondition(ValueError):
    pass


class BadSetting(ValueError):
    """A setting out of its range (or of the wrong type); the message names it, in one line."""


def _show(value) -> str:
    return repr(value)[:60]


def _whole(name: str, value, lo: int, hi: int | None = None, why: str = "") -> None:
    """`value` must be an integer from `lo` to `hi` (inclusive; None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise BadSetting(f"{name} must be a whole number, not {_show(value)}")
    if value < lo or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"from {lo} to {hi}"
        raise BadSetting(f"{name} must be {bounds}{why}, not {_show(value)}")


def _real(name: str, value, above: float | None = None, at_least: float | None = None, at_most: float | None = None,
          why: str = "") -> None:
    """`value` must be a finite number, above `above` or at least `at_least`, and at most `at_most`."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise BadSetting(f"{name} must be a number, not {_show(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise BadSetting(f"{name} must be a finite number, not {_show(value)}")
    if above is not None and not value > above:
        raise BadSetting(f"{name} must be above {above:g}, not {_show(value)}")
    if at_least is not None and not value >= at_least:
        raise BadSetting(f"{name} must be at least {at_least:g}, not {_show(value)}")
    if at_most is not None and not value <= at_most:
        raise BadSetting(f"{name} must be at most {at_most:g}{why}, not {_show(value)}")


# where each setting lies in a recording's `config` (RunConfig.to_dict)
_RECORDED = {"input_dim": "config.model.input_dim", "hidden_dim": "config.model.hidden_dim",
             "batch_size": "config.data.batch_size", "lr": "config.trainer.lr",
             **{f.name: f"config.bcl.{f.name}" for f in fields(BCLConfig)}}


def check(cfg: RunConfig, names: dict[str, str] | None = None) -> RunConfig:
    """`cfg` itself if every setting is one a run can train with; else BadSetting naming the first that
    is not (as `names` spells it: {setting: name})."""
    def name(setting: str) -> str:
        return (names or {}).get(setting, setting)

    _whole(name("input_dim"), cfg.input_dim, 1)
    _whole(name("hidden_dim"), cfg.hidden_dim, 1)
    _whole(name("batch_size"), cfg.batch_size, 1, TRAIN_IMAGES, f" (MNIST has {TRAIN_IMAGES} training images)")
    _real(name("lr"), cfg.lr, above=0, at_most=MAX_LR, why=" (Adam's first step, 10 lr, must fit a float32)")
    if cfg.bcl is not None:
        b = cfg.bcl
        _real(name("som_lr"), b.som_lr, at_least=0)
        _real(name("temperature"), b.temperature, above=0)
        if cfg.hidden_dim < 2:
            raise BadSetting(f"BCL needs at least 2 features, not {name('hidden_dim')} {cfg.hidden_dim}")
        _whole(name("neighborhood_k"), b.neighborhood_k, 1, cfg.hidden_dim - 1, f" (below the {cfg.hidden_dim} features)")
        _whole(name("recompute_every"), b.recompute_every, 1)
    return cfg


MAX_SEED = 2**64 - 1  # torch seeds its generators with an unsigned 64-bit number


def check_seed(seed: int) -> int:
    """`seed` itself if a run can be seeded with it (0 to 2**64 - 1); else BadSetting."""
    _whole("seed", seed, 0, MAX_SEED)
    return seed


def make_config(condition: str, *, batch_size: int | None = None, lr: float | None = None, **bcl: float | int | None) -> RunConfig:
    """The condition's settings with any non-None override applied (BCL overrides need a BCL condition).

    Raises UnknownCondition for a condition that does not exist or an override it cannot take, and
    BadSetting for a value out of its range (a non-positive, NaN or infinite rate, a batch larger
    than the dataset, a neighbourhood as large as the features, ...)."""
    if not isinstance(condition, str) or condition not in CONDITIONS:
        raise UnknownCondition(f"unknown condition {_show(condition)}; choose one of: {', '.join(CONDITIONS)}")
    cfg = CONDITIONS[condition]
    bcl_over = {k: v for k, v in bcl.items() if v is not None}
    if unknown := sorted(set(bcl_over) - {f.name for f in fields(BCLConfig)}):
        raise UnknownCondition(f"{unknown[0]} is not a BCL setting")
    if bcl_over:
        if cfg.bcl is None:
            raise UnknownCondition(f"condition {condition!r} has no BCL; {', '.join(bcl_over)} cannot be set")
        cfg = replace(cfg, bcl=replace(cfg.bcl, **bcl_over))
    if batch_size is not None:
        cfg = replace(cfg, batch_size=batch_size)
    if lr is not None:
        cfg = replace(cfg, lr=lr)
    return check(cfg)
