"""BCL's own per-step summaries, beside the ones every recording gets (see capture/format.py), and
its derived keys.

Each summary is computed for n steps at once from their stacked captures `{key value: array [n, ...]}`:
`name -> (dims after "step", dtype, the keys it needs, function)`. A recorder that captures a
vocabulary calls `vocabulary.summaries()`; this is StepTensorKey's. A derived key (`BCL_DERIVED`,
`vocabulary.derived()`) is a tensor the recorder computes the same way, instead of the training loop.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

DEAD_WIN_RATE = 0.01  # a feature whose win_rate is below this is dead

Summary = tuple[tuple[str, ...], str, tuple[str, ...], Callable[[dict], np.ndarray]]


def frobenius(a: np.ndarray) -> np.ndarray:
    """[n,...] -> [n]: the Frobenius norm of each step's tensor (accumulated in float64: one step at
    a time made float64 and dotted with itself, about twice einsum's speed on the whole block, and
    its float64 copy stays in the cache, where the training beside it needs the memory bus)."""
    out = np.empty(len(a))
    for i, step in enumerate(a.reshape(len(a), -1)):
        step = step.astype(np.float64)
        out[i] = step @ step
    return np.sqrt(out)


def row_norms(a: np.ndarray) -> np.ndarray:
    """[n,D,P] -> [n,D]: the L2 norm of each row (accumulated in float64)."""
    a = a.astype(np.float64)
    return np.sqrt(np.einsum("ndp,ndp->nd", a, a))


def _copy(key: str) -> Callable[[dict], np.ndarray]:
    return lambda b: b[key]


# the seed's per-feature table: every [feature] vector, and the size of each feature's two forces
_PER_FEATURE = ("win_rate", "feature_novelty", "gradient_weight", "contender_weight", "attraction_weight")

BCL_SUMMARIES: dict[str, Summary] = {
    **{k: (("feature",), "float32", (k,), _copy(k)) for k in _PER_FEATURE},
    "image_coverage": (("image",), "float32", ("image_coverage",), _copy("image_coverage")),
    "grad_magnitude": (("feature",), "float32", ("grad_masked",), lambda b: row_norms(b["grad_masked"])),
    "som_magnitude": (("feature",), "float32", ("som_delta",), lambda b: row_norms(b["som_delta"])),
    "dead_features": ((), "int32", ("win_rate",), lambda b: (b["win_rate"] < DEAD_WIN_RATE).sum(axis=1)),
    "weight_cosine_offdiag": ((), "float32", ("encoder_weights",), lambda b: offdiag_cosine(b["encoder_weights"])),
    "som_target_cosine_offdiag": ((), "float32", ("som_targets",), lambda b: offdiag_cosine(b["som_targets"])),
    "grad_cosine_offdiag": ((), "float32", ("grad_masked",), lambda b: offdiag_cosine(b["grad_masked"])),
    "update_norm": ((), "float32", ("encoder_weights", "encoder_weights_post"),
                    lambda b: frobenius(b["encoder_weights_post"] - b["encoder_weights"])),
}


def unit_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n,D,P] -> each row divided by its length or by 1e-12 if that is less (a zero row stays 0, as
    torch's F.normalize gives), in float32; and [n,D] the length of each row so divided."""
    norms = np.sqrt(np.einsum("ndp,ndp->nd", a, a))
    scale = np.maximum(norms, np.float32(1e-12))
    return a / scale[..., None], norms.astype(np.float64) / scale


def cosine_rows(a: np.ndarray) -> np.ndarray:
    """[n,D,P] -> [n,D,D]: the cosine similarity of the rows of each step's matrix (a zero row has
    similarity 0 with everything), in float32."""
    unit, _ = unit_rows(a)
    return unit @ unit.transpose(0, 2, 1)


def offdiag_cosine(a: np.ndarray) -> np.ndarray:
    """[n,D,P] -> [n]: the mean off-diagonal entry of each step's `cosine_rows` matrix, without
    making it: the entries of U U^T add up to |sum of U's rows|^2 and its diagonal to the sum of
    their squared lengths (summed in float64; within 1e-6 of the mean of the float32 matrix)."""
    unit, lengths = unit_rows(a)
    total = unit.sum(axis=1, dtype=np.float64)
    d = a.shape[1]
    return (np.einsum("np,np->n", total, total) - np.einsum("nd,nd->n", lengths, lengths)) / (d * d - d)


# the three cosine matrices, from the captured rows: one batched product per chunk of steps in the
# writer, rather than three small ones per step in the training loop
BCL_DERIVED: dict[str, tuple[tuple[str, ...], Callable[[dict], np.ndarray]]] = {
    "weight_cosine_matrix": (("encoder_weights",), lambda b: cosine_rows(b["encoder_weights"])),
    "som_target_cosine_matrix": (("som_targets",), lambda b: cosine_rows(b["som_targets"])),
    "grad_cosine_matrix": (("grad_masked",), lambda b: cosine_rows(b["grad_masked"])),
}
