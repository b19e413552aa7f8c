"""The named experimental conditions and the full run configuration (no torch needed to read them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace



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
        return cls(
            condition=condition,
            input_dim=d["model"]["input_dim"],
            hidden_dim=d["model"]["hidden_dim"],
            batch_size=d["data"]["batch_size"],
            lr=d["trainer"]["lr"],
            bcl=BCLConfig(**d["bcl"]) if d.get("bcl") else None,
        )


CONDITIONS: dict[str, RunConfig] = {
    "control": RunConfig(condition="control", bcl=None),
    "bcl-slow": RunConfig(condition="bcl-slow", bcl=BCLConfig(som_lr=0.001)),
    "bcl-med": RunConfig(condition="bcl-med", bcl=BCLConfig(som_lr=0.005)),
    "bcl-fast": RunConfig(condition="bcl-fast", bcl=BCLConfig(som_lr=0.01)),
}


class UnknownCondition(ValueError):
    pass


def make_config(condition: str, *, batch_size: int | None = None, lr: float | None = None, **bcl: float | int | None) -> RunConfig:
    """The condition's settings with any non-None override applied (BCL overrides need a BCL condition)."""
    if condition not in CONDITIONS:
        raise UnknownCondition(f"unknown condition {condition!r}; choose one of: {', '.join(CONDITIONS)}")
    cfg = CONDITIONS[condition]
    bcl_over = {k: v for k, v in bcl.items() if v is not None}
    if bcl_over:
        if cfg.bcl is None:
            raise UnknownCondition(f"condition {condition!r} has no BCL; {', '.join(bcl_over)} cannot be set")
        cfg = replace(cfg, bcl=replace(cfg.bcl, **bcl_over))
    if batch_size is not None:
        cfg = replace(cfg, batch_size=batch_size)
    if lr is not None:
        cfg = replace(cfg, lr=lr)
    return cfg
