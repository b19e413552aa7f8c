"""What a training step exposes: key vocabularies (`TensorKey`, BCL's `StepTensorKey`) and a `StepInspector`.

A vocabulary is an enum of `TensorKey`: each member carries its dimension names (the recording's
`dimension_names`), how the viewer draws it (`render`), whether its values are signed (a diverging
colour scale centred on 0) and an optional one-line description. A recording stores the table of
its vocabulary (`TensorKey.table()`), so a reader, the viewer included, needs no code of the
vocabulary's to understand it. Adding a tensor is one member and one `capture()` call.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# how the viewer draws a key: a number, a [rows, cols] colour map, rows as square images when they
# are (else a colour map), a batch of images [n, channels?, h, w], one bar per entry, class labels,
# and BCL's neighbour lists
RENDERS = ("scalar", "heatmap", "weights", "images", "bars", "labels", "neighbors")
NAMES = ("labels", "neighbors")  # the renders of values that name things (classes, indices), not amounts


class TensorKey(str, Enum):
    """The base of every key vocabulary. A member is `value, dims, render[, signed[, description]]`:

        class Keys(TensorKey):
            LOSS = "loss", (), "scalar"
            FC1_WEIGHT = "fc1_weight", ("unit", "pixel"), "weights", True

    Or made at run time: `TensorKey("Keys", {"LOSS": ("loss", (), "scalar")})`.
    """

    dims: tuple[str, ...]
    render: str
    signed: bool
    description: str

    def __new__(cls, value: str, dims: tuple[str, ...] = (), render: str = "heatmap", signed: bool = False,
                description: str = ""):
        return _member(cls, value, dims, render, signed, description)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def summaries(cls) -> dict:
        """Per-step summaries of this vocabulary's own, beyond those every recording gets
        (`name -> (dims after step, dtype, keys it needs, function of the stacked captures)`)."""
        return {}

    @classmethod
    def derived(cls) -> dict:
        """Keys of this vocabulary computed from other keys' captures rather than captured by the loop
        (`key value -> (keys it needs, function of their stacked captures {key: [n, ...]} -> [n, ...])`).
        The recording's writer computes them, n steps at a time, off the training loop; a derived key
        the loop captures itself is stored as captured."""
        return {}

    @classmethod
    def table(cls) -> list[dict]:
        """The vocabulary as a recording stores it: one entry per key, in the vocabulary's order."""
        return [{"key": k.value, "name": k.name, "dims": list(k.dims), "render": k.render, "signed": k.signed,
                 "description": k.description} for k in cls]


def _member(cls, value, dims, render, signed, description) -> TensorKey:
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"{cls.__name__}: a key's value must be a name of letters, digits and _, not {value!r}")
    if isinstance(dims, str) or not all(isinstance(d, str) and d for d in dims):
        raise ValueError(f"{cls.__name__}.{value}: dims must be a tuple of dimension names, not {dims!r}")
    if render not in RENDERS:
        raise ValueError(f"{cls.__name__}.{value}: render {render!r} is not one of {', '.join(RENDERS)}")
    obj = str.__new__(cls, value)
    obj._value_ = value
    obj.dims, obj.render, obj.signed, obj.description = tuple(dims), render, bool(signed), str(description)
    return obj


class StepTensorKey(TensorKey):
    """BCL's vocabulary: every tensor of SPEC section 4, in the order the trainer computes them.
    A member is `value, dims, bcl, render[, signed]`; `bcl` marks the keys only BCL conditions have."""

    bcl: bool

    def __new__(cls, value: str, dims: tuple[str, ...], bcl: bool, render: str, signed: bool = False):
        obj = _member(cls, value, dims, render, signed, "")
        obj.bcl = bcl
        return obj

    @classmethod
    def summaries(cls) -> dict:
        from acc.summaries import BCL_SUMMARIES

        return BCL_SUMMARIES

    @classmethod
    def derived(cls) -> dict:
        from acc.summaries import BCL_DERIVED

        return BCL_DERIVED

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
    # -- derived (by the recording's writer, see `derived`): cosine similarity of the rows of
    # encoder_weights, som_targets, grad_masked
    WEIGHT_COSINE_MATRIX = "weight_cosine_matrix", ("feature", "other_feature"), False, "heatmap", True
    SOM_TARGET_COSINE_MATRIX = "som_target_cosine_matrix", ("feature", "other_feature"), True, "heatmap", True
    GRAD_COSINE_MATRIX = "grad_cosine_matrix", ("feature", "other_feature"), False, "heatmap", True


class CaptureError(ValueError):
    """A capture or a commit that does not fit the vocabulary or the steps before it; says why in one line."""


class StepInspector:
    """Collects the tensors of one step by key, then hands finished steps to whoever drains them.

    Works with any training loop: call `capture(key, tensor)` while the step runs, `commit(step)`
    when it is over, and `drain()` to take the finished steps. Each capture is one copy to the CPU,
    so later in-place updates of the live tensor cannot change what was captured. Keys come from
    one vocabulary (`keys`, StepTensorKey by default): a key of another is refused.

    `into(slots)` gives the next step's captures a place to go: a capture whose shape and dtype match
    its key's slot is copied there, not into a new tensor. A recording session passes rows of its
    shared buffers this way, so each captured value is copied once. A CUDA tensor goes first into a
    page-locked buffer of its key's, asynchronously (`non_blocking`): the step's copies run while
    training goes on, and `take()` (or a `get()`) waits for them once, then moves them into the slots.
    """

    def __init__(self, keys: type[TensorKey] = StepTensorKey) -> None:
        self.keys = keys
        self._current: dict[TensorKey, torch.Tensor] = {}
        self._done: list[tuple[int, dict[TensorKey, torch.Tensor]]] = []
        self._slots: dict[TensorKey, torch.Tensor] = {}
        self._pinned: dict[TensorKey, torch.Tensor] = {}  # a page-locked buffer per key captured from a GPU
        self._in_flight: list[tuple[torch.Tensor, torch.Tensor, torch.device]] = []  # (page-locked buffer, its slot, from)

    def key(self, key: TensorKey | str) -> TensorKey:
        """`key` as a member of this inspector's vocabulary (its value as a string works too)."""
        if isinstance(key, self.keys):
            return key
        if type(key) in getattr(self.keys, "merged_from", ()):  # a key of a vocabulary merged into this one
            return self.keys(key.value)
        if isinstance(key, TensorKey):
            raise CaptureError(f"{type(key).__name__}.{key.name} is not a key of {self.keys.__name__}")
        try:
            return self.keys(key)
        except ValueError:
            raise CaptureError(f"{key!r} is not a key of {self.keys.__name__}") from None

    def capture(self, key: TensorKey | str, tensor: torch.Tensor) -> None:
        import torch

        key = self.key(key)
        if not isinstance(tensor, torch.Tensor):
            raise CaptureError(f"capture({key.value}): expected a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != len(key.dims):
            raise CaptureError(f"capture({key.value}): the key has {len(key.dims)} dims {key.dims}, "
                               f"the tensor has shape {tuple(tensor.shape)}")
        tensor = tensor.detach()
        if tensor.layout != torch.strided:  # a sparse gradient (nn.Embedding(sparse=True)): stored as its values
            tensor = tensor.to_dense()
        slot = self._slots.get(key)
        if slot is not None and slot.shape == tensor.shape and slot.dtype == tensor.dtype:
            if tensor.is_cuda:
                pinned = self._pinned.get(key)
                if pinned is None or pinned.shape != slot.shape or pinned.dtype != slot.dtype:
                    pinned = self._pinned[key] = torch.empty(slot.shape, dtype=slot.dtype, pin_memory=True)
                pinned.copy_(tensor, non_blocking=True)
                self._in_flight.append((pinned, slot, tensor.device))
            else:
                slot.copy_(tensor)
            self._current[key] = slot
        else:
            self._current[key] = tensor.to("cpu", copy=True)

    def _land(self) -> None:
        """Wait once for each GPU's copies in flight, then move them into their slots."""
        if self._in_flight:
            import torch

            for device in {device for _, _, device in self._in_flight}:
                torch.cuda.synchronize(device)
            for pinned, slot, _ in self._in_flight:
                slot.copy_(pinned)
            self._in_flight.clear()

    def into(self, slots: dict[TensorKey, torch.Tensor]) -> None:
        """Where the next captures of these keys go (see the class); each slot holds one step's value."""
        self._slots = slots

    def take(self) -> dict[TensorKey, torch.Tensor]:
        """The current step's captures, their copies finished; the inspector starts a new step."""
        self._land()
        current, self._current, self._slots = self._current, {}, {}
        return current

    def get(self, key: TensorKey) -> torch.Tensor | None:
        """A tensor captured during the current (uncommitted) step."""
        self._land()
        return self._current.get(key)

    def commit(self, step: int) -> None:
        self._done.append((step, self.take()))

    def drain(self) -> list[tuple[int, dict[TensorKey, torch.Tensor]]]:
        done, self._done = self._done, []
        return done
