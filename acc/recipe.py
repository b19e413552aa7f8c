"""The BCL recipe: build a run from a condition, and wire a StepInspector to it.

All capture goes through the trainer's `training_metrics_fn`, a forward hook on `encoder.0` and an
optimizer step hook, each key at the moment SPEC section 4 names; the three cosine matrices are
derived keys (StepTensorKey.derived), computed by the recording's writer from the captured rows.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from acc.bcl import BCL
from acc.conditions import RunConfig
from acc.data import BatchStream, load_mnist
from acc.model import LinearAutoencoder
from acc.step_inspector import StepInspector
from acc.step_inspector import StepTensorKey as K
from acc.trainer import Trainer


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return device


@dataclass
class Run:
    config: RunConfig
    trainer: Trainer
    bcl: BCL | None

    @property
    def layer(self) -> nn.Linear:
        return self.trainer.model.encoder[0]

    def state_dict(self, copy: bool = True) -> dict:
        """Everything an exact continuation needs: a deep copy, which later steps do not change; or
        with `copy=False` the live tensors themselves, for saving at once (torch.save) before training on."""
        t = self.trainer
        state = {
            "step": t.step, "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
            "stream": t.stream.state_dict(), "bcl": self.bcl.state_dict() if self.bcl else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        }
        return deepcopy(state) if copy else state

    def load_state_dict(self, state: dict) -> None:
        t = self.trainer
        t.step = state["step"]
        t.model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        t.stream.load_state_dict(state["stream"])
        if self.bcl is not None:
            self.bcl.load_state_dict(state["bcl"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def build_run(config: RunConfig, seed: int, device: str = "cpu", data_root: Path | None = None) -> Run:
    """Model initialised from `seed`, data stream shuffled from `seed`, BCL attached if the condition has it."""
    images, labels = load_mnist(data_root)
    torch.manual_seed(seed)
    model = LinearAutoencoder(config.input_dim, config.hidden_dim).to(device)
    stream = BatchStream(images, labels, config.batch_size, seed, device)
    trainer = Trainer(model, stream, lr=config.lr)
    bcl = BCL(model.encoder[0], config.bcl) if config.bcl else None
    return Run(config, trainer, bcl)


_BCL_FORWARD_KEYS = [k for k in K if k.bcl and k not in (K.SOM_DELTA, K.SOM_TARGET_COSINE_MATRIX, K.NEIGHBORS)]


def captured_keys(config: RunConfig) -> list[K]:
    """The keys a run of this configuration records (the control condition has no BCL keys)."""
    return [k for k in K if config.bcl is not None or not k.bcl]


class InspectorHooks:
    """Captures every StepTensorKey of a run but the derived ones into `inspector`, then calls `commit()` as each step
    ends (the inspector's own `commit` by default); `remove()` undoes the wiring."""

    def __init__(self, run: Run, inspector: StepInspector, commit: Callable[[], None] | None = None):
        self.run, self.inspector = run, inspector
        self.commit = commit or (lambda: inspector.commit(self._step))
        self._step = -1
        layer, opt = run.layer, run.trainer.optimizer
        self._handles = [
            layer.register_forward_hook(self._on_forward),
            opt.register_step_post_hook(self._after_optimizer_step),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def _on_forward(self, module: nn.Linear, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        ins = self.inspector
        images, labels = self.run.trainer.batch
        ins.capture(K.BATCH_IMAGES, images)
        ins.capture(K.BATCH_LABELS, labels.to(torch.int32))
        ins.capture(K.ENCODER_WEIGHTS, module.weight)
        if self.run.bcl is not None:
            last = self.run.bcl.last
            for key in _BCL_FORWARD_KEYS:
                ins.capture(key, last[key.value])
            ins.capture(K.NEIGHBORS, last["neighbors"].to(torch.int32))

    def metrics_fn(self, step: int) -> None:
        """The trainer's `training_metrics_fn`: runs after backward, before the optimizer step."""
        ins, trainer, bcl = self.inspector, self.run.trainer, self.run.bcl
        self._step = step
        ins.capture(K.LOSS, trainer.loss)
        grad = self.run.layer.weight.grad
        ins.capture(K.GRAD_MASKED, grad)
        if bcl is None:
            ins.capture(K.GRAD_RAW, grad)
        else:
            x = trainer.batch[0].flatten(1)
            ins.capture(K.GRAD_RAW, bcl.last["grad_z"].T @ x)
            ins.capture(K.SOM_DELTA, bcl.last["som_delta"])

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        self.inspector.capture(K.ENCODER_WEIGHTS_POST, self.run.layer.weight)
        self.commit()  # (the cosine matrices are derived keys: the recording's writer computes them)
