"""The training loop. It knows nothing of capture: observers use the callback and PyTorch hooks."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from acc.data import BatchStream


def l1_loss(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The mean absolute error, summed image by image and then over the batch: each image's sum is
    one thread's work whatever the number of threads, so the loss has the same bits on 1, 2, 4 or 8
    threads (nn.L1Loss splits its one long sum among the threads, and its last bits follow their
    number). Its gradient is nn.L1Loss's, bit for bit: sign(recon - images) / N."""
    return (recon - images).abs().flatten(1).sum(dim=1).sum() / recon.numel()


class Trainer:
    """Adam on the L1 reconstruction loss; `train()` may be called repeatedly and continues the stream."""

    def __init__(self, model: nn.Module, stream: BatchStream, lr: float = 1e-3):
        self.model, self.stream = model, stream
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss_fn = l1_loss
        self.step = 0  # steps completed so far
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None  # the current step's (images, labels)
        self.loss: torch.Tensor | None = None  # the current step's loss

    def train(self, steps: int, training_metrics_fn: Callable[[int], None] | None = None) -> None:
        """Per step: next batch -> forward -> loss -> zero_grad -> backward -> metrics fn -> optimizer.step."""
        self.model.train()
        for _ in range(steps):
            self.batch = self.stream.next()
            images = self.batch[0]
            recon = self.model(images)
            self.loss = self.loss_fn(recon, images)
            self.optimizer.zero_grad()
            self.loss.backward()
            if training_metrics_fn is not None:
                training_metrics_fn(self.step)
            self.optimizer.step()
            self.step += 1
