"""Bidirectional Competitive Learning (BCL) on one Linear layer, as SPEC section 3 defines it.

A forward hook computes the competition, the novelty and the SOM targets for the batch; a hook on
the layer's output gradient applies the SOM update to the weight in place and masks the gradient.
Every intermediate of the current step is kept in `BCL.last` (by reference, computed once) so an
observer can read it; BCL itself knows nothing of capture.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from acc.conditions import BCLConfig

EPS = 1e-8


def nearest_neighbors(weight: Tensor, k: int) -> Tensor:
    """[D,k] indices of the k rows most cosine-similar to each row, the row itself excluded."""
    unit = nn.functional.normalize(weight, dim=1)
    cos = unit @ unit.T
    cos.fill_diagonal_(float("-inf"))
    return cos.topk(k, dim=1).indices


class BCL:
    """Attach with `BCL(layer, config)`; `detach()` removes the hooks."""

    def __init__(self, layer: nn.Linear, config: BCLConfig):
        self.layer, self.config = layer, config
        self.calls = 0  # forward calls so far; neighbours are recomputed when it is a multiple of recompute_every
        self.neighbors: Tensor | None = None
        self.last: dict[str, Tensor] = {}
        self._handle = layer.register_forward_hook(self._forward_hook)

    def detach(self) -> None:
        self._handle.remove()

    def state_dict(self) -> dict:
        return {"calls": self.calls, "neighbors": None if self.neighbors is None else self.neighbors.clone()}

    def load_state_dict(self, state: dict) -> None:
        neighbors = state["neighbors"]  # (saved from the device the run trained on)
        self.calls, self.neighbors = state["calls"], None if neighbors is None else neighbors.to(self.layer.weight.device)

    @torch.no_grad()
    def _forward_hook(self, module: nn.Linear, inputs: tuple[Tensor, ...], z: Tensor) -> None:
        c = self.config
        x, W = inputs[0].detach(), module.weight.detach()
        if self.calls % c.recompute_every == 0 or self.neighbors is None:
            self.neighbors = nearest_neighbors(W, c.neighborhood_k)
        self.calls += 1
        nbr = self.neighbors

        strength = z.detach().abs()  # [B,D]
        rank_score = torch.sigmoid(c.temperature * (strength - strength[:, nbr].amax(dim=2)))
        image_coverage = rank_score.sum(dim=1)  # [B]
        share = rank_score / (image_coverage[:, None] + EPS)
        feature_novelty = share.sum(dim=0) / (rank_score.sum(dim=0) + EPS)  # [D]
        local_coverage = rank_score[:, nbr].sum(dim=2)  # [B,D]
        local_novelty = 1.0 / (local_coverage + 1.0)
        win_rate = rank_score.mean(dim=0)
        gradient_weight = win_rate * feature_novelty
        contender_weight = (1 - gradient_weight) * win_rate
        attraction_weight = (1 - gradient_weight) * (1 - win_rate)

        winner = rank_score.argmax(dim=1)  # [B]
        in_nbr = torch.zeros_like(rank_score)
        in_nbr.scatter_(1, nbr[winner], 1.0)
        grad_mask = rank_score * (feature_novelty * gradient_weight)

        P = rank_score * local_novelty * (1 - feature_novelty) * in_nbr * contender_weight
        local_target = (P / (P.sum(dim=0) + EPS)).T @ x
        Q = (1 - rank_score) / (image_coverage[:, None] + EPS) * attraction_weight
        global_target = (Q / (Q.sum(dim=0) + EPS)).T @ x
        kappa, alpha = contender_weight[:, None], attraction_weight[:, None]
        som_targets = (kappa * local_target + alpha * global_target) / (kappa + alpha + EPS)

        self.last = dict(
            strength=strength, neighbors=nbr, rank_score=rank_score, image_coverage=image_coverage,
            feature_novelty=feature_novelty, local_coverage=local_coverage, local_novelty=local_novelty,
            win_rate=win_rate, gradient_weight=gradient_weight, contender_weight=contender_weight,
            attraction_weight=attraction_weight, in_nbr=in_nbr, grad_mask=grad_mask,
            local_target=local_target, global_target=global_target, som_targets=som_targets,
        )
        if z.requires_grad:
            z.register_hook(self._backward_hook)

    @torch.no_grad()
    def _backward_hook(self, grad_z: Tensor) -> Tensor:
        W = self.layer.weight
        som_delta = self.config.som_lr * (self.last["som_targets"] - W)
        W.add_(som_delta)
        self.last["som_delta"] = som_delta
        self.last["grad_z"] = grad_z  # dL/dz before the mask: the observer's grad_raw is grad_z^T x
        return grad_z * self.last["grad_mask"]
