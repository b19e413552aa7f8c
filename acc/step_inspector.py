"""One vocabulary for what a training step exposes: `StepTensorKey`, and a generic `StepInspector`.

Each key carries its dimension names (the recording's `dimension_names` and the viewer's layout),
whether it is a BCL tensor, and how the viewer draws it. The viewer's copy of this table is
rendered from here at build time, so Python and JS cannot drift. Adding a tensor is one value
here, one `capture()` call in the recipe, one renderer entry in the viewer.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class StepTensorKey(str, Enum):
    dims: tuple[str, ...]
    bcl: bool
    render: str
    signed: bool

    def __new__(cls, value: str, dims: tuple[str, ...], bcl: bool, render: str, signed: bool = False):
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.dims, obj.bcl, obj.render, obj.signed = dims, bcl, render, signed
        return obj

    # -- batch data (captured as the batch enters the model)
    BATCH_IMAGES = "batch_images", ("image", "channel", "height", "width"), False, "images"
    BATCH_LABELS = "batch_labels", ("image",), False, "labels"
    # -- loss (after backward)
    LOSS = "loss", (), False, "scalar"
    # -- encoder weights as the forward pass saw them
    ENCODER_WEIGHTS = "encoder_weights", ("feature", "pixel"), False, "weights", True
    # -- BCL competition (forward hook)
    STRENGTH = "strength", ("image", "feature"), True, "heatmap"
    RANK_SCORE = "rank_score", ("image", "feature"), True, "heatmap"
    IMAGE_COVERAGE = "image_coverage", ("image",), True, "bars"
    FEATURE_NOVELTY = "feature_novelty", ("feature",), True, "bars"
    WIN_RATE = "win_rate", ("feature",), True, "bars"
    # -- BCL neighbourhoods (forward hook)
    NEIGHBORS = "neighbors", ("feature", "neighbor"), True, "neighbors"
    LOCAL_COVERAGE = "local_coverage", ("image", "feature"), True, "heatmap"
    LOCAL_NOVELTY = "local_novelty", ("image", "feature"), True, "heatmap"
    IN_NEIGHBORHOOD = "in_nbr", ("image", "feature"), True, "heatmap"
    # -- BCL blending weights (forward hook)
    GRADIENT_WEIGHT = "gradient_weight", ("feature",), True, "bars"
    CONTENDER_WEIGHT = "contender_weight", ("feature",), True, "bars"
    ATTRACTION_WEIGHT = "attraction_weight", ("feature",), True, "bars"
    # -- BCL forces (forward hook, som_delta in the backward hook)
    GRAD_MASK = "grad_mask", ("image", "feature"), True, "heatmap"
    LOCAL_TARGET = "local_target", ("feature", "pixel"), True, "weights"
    GLOBAL_TARGET = "global_target", ("feature", "pixel"), True, "weights"
    SOM_TARGETS = "som_targets", ("feature", "pixel"), True, "weights"
    SOM_DELTA = "som_delta", ("feature", "pixel"), True, "weights", True
    # -- gradients from autograd (after backward)
    GRAD_RAW = "grad_raw", ("feature", "pixel"), False, "weights", True
    GRAD_MASKED = "grad_masked", ("feature", "pixel"), False, "weights", True
    # -- after optimizer.step
    ENCODER_WEIGHTS_POST = "encoder_weights_post", ("feature", "pixel"), False, "weights", True
    # -- derived: cosine similarity of the rows of encoder_weights, som_targets, grad_masked
    WEIGHT_COSINE_MATRIX = "weight_cosine_matrix", ("feature", "other_feature"), False, "heatmap", True
    SOM_TARGET_COSINE_MATRIX = "som_target_cosine_matrix", ("feature", "other_feature"), True, "heatmap", True
    GRAD_COSINE_MATRIX = "grad_cosine_matrix", ("feature", "other_feature"), False, "heatmap", True

    def __str__(self) -> str:
        return self.value


class StepInspector:
    """Collects the tensors of one step by key, then hands finished steps to whoever drains them.

    Works with any training loop: call `capture(key, tensor)` while the step runs, `commit(step)`
    when it is over, and `drain()` to take the finished steps. Each capture is one copy to the CPU,
    so later in-place updates of the live tensor cannot change what was captured.
    """

    def __init__(self) -> None:
        self._current: dict[StepTensorKey, torch.Tensor] = {}
        self._done: list[tuple[int, dict[StepTensorKey, torch.Tensor]]] = []

    def capture(self, key: StepTensorKey | str, tensor: torch.Tensor) -> None:
        self._current[StepTensorKey(key)] = tensor.detach().to("cpu", copy=True)

    def get(self, key: StepTensorKey) -> torch.Tensor | None:
        """A tensor captured during the current (uncommitted) step."""
        return self._current.get(key)

    def commit(self, step: int) -> None:
        self._done.append((step, self._current))
        self._current = {}

    def drain(self) -> list[tuple[int, dict[StepTensorKey, torch.Tensor]]]:
        done, self._done = self._done, []
        return done
