"""SPEC section 4 identities, checked on real recordings read with plain zarr-python.

Nothing here goes through `capture.Recording`: a recording must be readable (and must hold these
identities) for anyone with zarr and numpy. Reference values are recomputed in float64 from the
stored tensors; tolerances appear only where float32 and float64 arithmetic may differ, and the
identities the spec states as "identical" are compared bit for bit.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

import acc
from acc.recipe import resolve_device
from acc.step_inspector import StepTensorKey

EPS = 1e-8
B, D, K, P = 128, 64, 8, 784

# The recording's vocabulary as docs/FORMAT.md lists it: key -> dimension names after "step".
COMMON_KEYS = {
    "batch_images": ("image", "channel", "height", "width"),
    "batch_labels": ("image",),
    "loss": (),
    "encoder_weights": ("feature", "pixel"),
    "grad_raw": ("feature", "pixel"),
    "grad_masked": ("feature", "pixel"),
    "encoder_weights_post": ("feature", "pixel"),
    "weight_cosine_matrix": ("feature", "other_feature"),
    "grad_cosine_matrix": ("feature", "other_feature"),
}
BCL_KEYS = {
    "strength": ("image", "feature"),
    "rank_score": ("image", "feature"),
    "image_coverage": ("image",),
    "feature_novelty": ("feature",),
    "win_rate": ("feature",),
    "neighbors": ("feature", "neighbor"),
    "local_coverage": ("image", "feature"),
    "local_novelty": ("image", "feature"),
    "in_nbr": ("image", "feature"),
    "gradient_weight": ("feature",),
    "contender_weight": ("feature",),
    "attraction_weight": ("feature",),
    "grad_mask": ("image", "feature"),
    "local_target": ("feature", "pixel"),
    "global_target": ("feature", "pixel"),
    "som_targets": ("feature", "pixel"),
    "som_delta": ("feature", "pixel"),
    "som_target_cosine_matrix": ("feature", "other_feature"),
}
SIZES = {"image": B, "channel": 1, "height": 28, "width": 28, "feature": D, "other_feature": D,
         "neighbor": K, "pixel": P}
INT_KEYS = {"neighbors", "batch_labels"}

# every captured float tensor's norm (not the derived cosine matrices': the writer derives them only
# at the steps it stores), the scalars, the non-finite count; and what BCL adds
COMMON_SUMMARIES = {"loss", "weight_cosine_offdiag", "grad_cosine_offdiag", "update_norm", "nonfinite", "full_capture",
                    "grad_magnitude",
                    *(f"{k}_norm" for k in ("batch_images", "encoder_weights", "grad_raw", "grad_masked",
                                            "encoder_weights_post"))}
BCL_SUMMARIES = {"win_rate", "feature_novelty", "gradient_weight", "contender_weight", "attraction_weight",
                 "image_coverage", "dead_features", "som_target_cosine_offdiag", "som_magnitude",
                 *(f"{k}_norm" for k in ("strength", "rank_score", "image_coverage", "feature_novelty", "win_rate",
                                         "local_coverage", "local_novelty", "in_nbr", "gradient_weight", "contender_weight",
                                         "attraction_weight", "grad_mask", "local_target", "global_target", "som_targets",
                                         "som_delta"))}


class Rec:
    """A recording read with plain zarr-python: attributes, and every array's trusted steps as numpy."""

    def __init__(self, path: Path):
        self.path = path
        self.root = zarr.open_group(str(path), mode="r")
        self.meta = self.root.attrs["acc_capture"]
        self.T = self.meta["steps_completed"]
        self.arrays = {name: arr for name, arr in self.root["tensors"].arrays()}
        self.summary_arrays = {name: arr for name, arr in self.root["summary"].arrays()}
        self.t = {name: arr[: self.T] for name, arr in self.arrays.items()}
        self.s = {name: arr[: self.T] for name, arr in self.summary_arrays.items()}

    def x(self) -> np.ndarray:
        """[T,B,784] float64 flattened batch."""
        return self.t["batch_images"].reshape(self.T, B, P).astype(np.float64)


@pytest.fixture(scope="module")
def bcl(bcl_rec) -> Rec:
    return Rec(bcl_rec)


@pytest.fixture(scope="module")
def control(control_rec) -> Rec:
    return Rec(control_rec)


@pytest.fixture(params=["bcl", "control"])
def rec(request) -> Rec:
    return request.getfixturevalue(request.param)


def f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def cosine(rows: np.ndarray) -> np.ndarray:
    """[.., D, D] cosine of the rows in float64; a zero row has similarity 0 (as F.normalize gives)."""
    rows = f64(rows)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
    return unit @ np.swapaxes(unit, -1, -2)


def assert_close(actual, expected, rtol=1e-5, atol=1e-7, what=""):
    np.testing.assert_allclose(f64(actual), f64(expected), rtol=rtol, atol=atol, err_msg=what)


# -- layout ---------------------------------------------------------------------------------------


def test_root_attributes_bcl(bcl):
    m = bcl.meta
    assert m["format"] == 2 and m["recipe"] == "bcl" and m["vocabulary"] == "StepTensorKey"
    assert m["key_table"] == StepTensorKey.table()
    assert m["status"] == "complete"
    assert m["steps_completed"] == 30
    assert m["condition"] == "bcl-slow"
    assert m["seed"] == 0
    assert m["note"] == "fixture"
    # the device the fixture asked for (`auto`, unless its command names one): CUDA where there is one
    asked = re.search(r"--device[ =](\S+)", m["command"])
    assert m["device"] == resolve_device(asked.group(1) if asked else "auto")
    assert set(m["keys"]) == set(COMMON_KEYS) | set(BCL_KEYS) and len(m["keys"]) == 27
    assert m["config"]["bcl"] == {"som_lr": 0.001, "neighborhood_k": 8, "temperature": 5.0, "recompute_every": 50}
    assert m["config"]["model"]["hidden_dim"] == D and m["config"]["model"]["input_dim"] == P
    assert m["config"]["data"]["batch_size"] == B
    assert m["config"]["trainer"]["lr"] == 1e-3
    assert "--chunk-steps 7" in m["command"]
    assert m["created"]
    for tool in ("acc_capture", "torch", "zarr", "numpy"):
        assert m["versions"][tool]


def test_control_has_no_bcl_keys_or_summaries(control):
    m = control.meta
    assert m["condition"] == "control" and m["config"]["bcl"] is None
    assert m["status"] == "complete" and m["steps_completed"] == 12
    assert set(m["keys"]) == set(COMMON_KEYS)
    assert set(control.arrays) == set(COMMON_KEYS)
    assert set(control.summary_arrays) == COMMON_SUMMARIES


def test_bcl_stores_every_key_and_summary(bcl):
    assert set(bcl.arrays) == set(COMMON_KEYS) | set(BCL_KEYS)
    assert set(bcl.summary_arrays) == COMMON_SUMMARIES | BCL_SUMMARIES


def test_array_shapes_dtypes_chunks_codecs(rec):
    for name, arr in rec.arrays.items():
        dims = ("step", *{**COMMON_KEYS, **BCL_KEYS}[name])
        assert arr.shape == tuple([rec.T] + [SIZES[d] for d in dims[1:]]), name
        per_step = int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
        codecs = [c.to_dict() for c in arr.metadata.codecs]
        if per_step > 4096:  # large tensors: one step per chunk (a reader decodes exactly one step), 20 chunks per file
            assert arr.chunks == (1, *arr.shape[1:]), f"{name}: one step per chunk"
            assert arr.shards == (20, *arr.shape[1:]), f"{name}: 20 steps per shard"
            assert [c["name"] for c in codecs] == ["sharding_indexed"], name
            codecs = codecs[0]["configuration"]["codecs"]
            assert [c["name"] for c in codecs] in (["bytes", "gzip"], ["bytes", "blosc", "crc32c"], ["bytes", "crc32c"]), f"{name}: {codecs}"
            assert codecs[0]["configuration"]["endian"] == "little", name
        else:  # small ones: 64 steps a chunk, one request for many steps, uncompressed (written in place)
            assert arr.chunks == (64, *arr.shape[1:]), f"{name}: 64 steps per chunk"
            assert arr.shards is None, name
            assert [c["name"] for c in codecs] == ["bytes"], f"{name}: {codecs}"
        assert arr.dtype == (np.int32 if name in INT_KEYS else np.float32), name
        if name in INT_KEYS:
            assert arr.fill_value == -1, name
        else:
            assert np.isnan(arr.fill_value), name
    for name, arr in rec.summary_arrays.items():
        assert arr.shape[0] == rec.T, name
        assert [c.to_dict()["name"] for c in arr.metadata.codecs] == ["bytes"], name


def test_dimension_names_consistent(rec):
    """Every array names every dimension; a name always has one size; a [D,D] matrix uses two names."""
    size_of: dict[str, int] = {}
    for group, arrays in (("tensors", rec.arrays), ("summary", rec.summary_arrays)):
        for name, arr in arrays.items():
            dims = arr.metadata.dimension_names
            assert dims is not None and len(dims) == arr.ndim, f"{group}/{name}: {dims}"
            assert all(dims), f"{group}/{name}: {dims}"
            assert dims[0] == "step", f"{group}/{name}: {dims}"
            assert len(set(dims)) == len(dims), f"{group}/{name} repeats a dimension name: {dims}"
            for d, n in zip(dims, arr.shape):
                assert size_of.setdefault(d, n) == n, f"{group}/{name}: dimension {d!r} is {n}, elsewhere {size_of[d]}"
    for name, dims in {**COMMON_KEYS, **BCL_KEYS}.items():
        if name in rec.arrays:
            assert tuple(rec.arrays[name].metadata.dimension_names) == ("step", *dims), name


# -- the batch ------------------------------------------------------------------------------------


def _mnist_train() -> tuple[np.ndarray, np.ndarray]:
    root = Path(acc.__file__).parent / "mnist"
    with gzip.open(root / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, P)
    with gzip.open(root / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def test_batches_are_mnist_training_images_with_their_labels(bcl):
    imgs, labels = bcl.t["batch_images"], bcl.t["batch_labels"]
    assert imgs.shape == (30, B, 1, 28, 28)
    assert imgs.min() >= 0.0 and imgs.max() <= 1.0
    as_bytes = np.rint(imgs * 255).astype(np.uint8).reshape(-1, P)
    # ToTensor's pixels: exactly uint8 / 255 in float32
    np.testing.assert_array_equal(imgs.reshape(-1, P), (as_bytes.astype(np.float32) / np.float32(255)))
    train_images, train_labels = _mnist_train()
    label_of: dict[bytes, set[int]] = {}
    for img, lab in zip(train_images, train_labels):
        label_of.setdefault(img.tobytes(), set()).add(int(lab))
    flat_labels = labels.reshape(-1)
    for img, lab in zip(as_bytes, flat_labels):
        assert int(lab) in label_of.get(img.tobytes(), ()), "a batch image is not a training image with that label"
    # 30 batches are well inside one epoch: no image is drawn twice
    distinct = {img.tobytes() for img in as_bytes}
    assert len(distinct) >= len(as_bytes) - 5  # (MNIST has a handful of byte-identical duplicates)


def test_labels_are_digits(rec):
    labels = rec.t["batch_labels"]
    assert labels.dtype == np.int32 and labels.shape == (rec.T, B)
    assert labels.min() >= 0 and labels.max() <= 9
    assert len(np.unique(labels[0])) == 10


# -- identities that hold in every condition ------------------------------------------------------


def test_encoder_weights_follow_from_the_previous_step(rec):
    """encoder_weights of step t+1 is encoder_weights_post of step t, bit for bit."""
    w, post = rec.t["encoder_weights"], rec.t["encoder_weights_post"]
    np.testing.assert_array_equal(w[1:], post[:-1])
    assert not np.array_equal(w[0], post[0]), "the weights did not change in a step"


def test_cosine_matrices_are_normalised_gram_matrices(rec):
    sources = {"weight_cosine_matrix": "encoder_weights", "grad_cosine_matrix": "grad_masked"}
    if "som_targets" in rec.t:
        sources["som_target_cosine_matrix"] = "som_targets"
    for matrix, source in sources.items():
        m = rec.t[matrix]
        assert m.shape == (rec.T, D, D)
        assert_close(m, cosine(rec.t[source]), rtol=0, atol=2e-6, what=f"{matrix} vs cosine({source})")
        np.testing.assert_allclose(m, np.swapaxes(m, 1, 2), atol=1e-6, err_msg=f"{matrix} is not symmetric")


def test_control_grad_raw_is_grad_masked(control):
    np.testing.assert_array_equal(control.t["grad_raw"], control.t["grad_masked"])
    assert np.abs(control.t["grad_raw"]).max() > 0


def test_bcl_masks_the_gradient(bcl):
    """With BCL the gradient is masked, so the masked and raw gradients are different tensors."""
    raw, masked = bcl.t["grad_raw"], bcl.t["grad_masked"]
    assert np.abs(raw).max() > 0
    assert not np.array_equal(raw, masked)
    # the mask G = R * nu * e is below 1, so masking only shrinks the gradient overall
    assert (np.linalg.norm(masked.reshape(30, -1), axis=1) < np.linalg.norm(raw.reshape(30, -1), axis=1)).all()


def _adam_updates(grads: np.ndarray, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8) -> np.ndarray:
    """Adam's parameter change at each step, replayed in float64 from the gradients it was given."""
    m = np.zeros(grads.shape[1:])
    v = np.zeros(grads.shape[1:])
    out = np.empty(grads.shape)
    for t, g in enumerate(f64(grads), start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        out[t - 1] = -lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
    return out


def test_weight_update_is_adam_on_the_masked_gradient(rec):
    """W_post = W + som_delta + Adam(grad_masked): the rest of the weight change is exactly Adam's step."""
    w, post = f64(rec.t["encoder_weights"]), f64(rec.t["encoder_weights_post"])
    som = f64(rec.t["som_delta"]) if "som_delta" in rec.t else 0.0
    adam = post - w - som
    expected = _adam_updates(rec.t["grad_masked"])
    # float32 rounding of W (|W| < 0.1) leaves ~1e-8; Adam's steps are ~1e-3
    assert_close(adam, expected, rtol=1e-3, atol=5e-8, what="W_post - W - som_delta vs Adam(grad_masked)")
    assert np.abs(expected).max() > 5e-4


def test_summaries_equal_what_they_summarise(rec):
    t, s, T = rec.t, rec.s, rec.T
    np.testing.assert_array_equal(s["loss"], t["loss"])
    assert s["full_capture"].dtype == bool and s["full_capture"].all()
    assert s["nonfinite"].dtype == np.int32 and (s["nonfinite"] == 0).all()
    sources = {"weight_cosine_offdiag": "weight_cosine_matrix", "grad_cosine_offdiag": "grad_cosine_matrix",
               "som_target_cosine_offdiag": "som_target_cosine_matrix"}
    off = ~np.eye(D, dtype=bool)
    for name, matrix in sources.items():
        if matrix in t:
            assert s[name].shape == (T,)
            assert_close(s[name], f64(t[matrix])[:, off].mean(axis=1), rtol=1e-5, atol=1e-6, what=name)
    norms = {"grad_raw_norm": f64(t["grad_raw"]), "grad_masked_norm": f64(t["grad_masked"]),
             # FORMAT.md: update_norm is the norm of encoder_weights_post - encoder_weights (SOM step included)
             "update_norm": f64(t["encoder_weights_post"]) - f64(t["encoder_weights"])}
    if "som_delta" in t:
        norms["som_delta_norm"] = f64(t["som_delta"])
    for key in t:  # every captured float tensor's norm (the generic summaries)
        if t[key].dtype.kind == "f" and t[key].ndim > 1 and "cosine_matrix" not in key:
            norms[f"{key}_norm"] = f64(t[key])
    for name, diff in norms.items():
        assert s[name].shape == (T,)
        assert_close(s[name], np.linalg.norm(diff.reshape(T, -1), axis=1), rtol=1e-4, atol=1e-9, what=name)


def test_bcl_summaries_equal_their_tensors(bcl):
    t, s = bcl.t, bcl.s
    for name in ("win_rate", "feature_novelty", "gradient_weight", "contender_weight", "attraction_weight",
                 "image_coverage"):
        np.testing.assert_array_equal(s[name], t[name], err_msg=name)
    assert s["dead_features"].dtype == np.int32
    np.testing.assert_array_equal(s["dead_features"], (t["win_rate"] < 0.01).sum(axis=1))
    # the seed's last two table columns: each feature's row norm of grad_masked and of som_delta
    for name, key in (("grad_magnitude", "grad_masked"), ("som_magnitude", "som_delta")):
        assert s[name].shape == t[key].shape[:2]
        assert_close(s[name], np.linalg.norm(f64(t[key]), axis=2), rtol=1e-5, atol=1e-9, what=name)


def test_no_nonfinite_values_in_a_healthy_run(rec):
    for name, a in rec.t.items():
        if a.dtype.kind == "f":
            assert np.isfinite(a).all(), name


# -- BCL: SPEC section 3, recomputed from the stored tensors --------------------------------------


def test_rank_score_and_coverage(bcl):
    t = bcl.t
    R, S, nbr = f64(t["rank_score"]), f64(t["strength"]), t["neighbors"]
    assert (S >= 0).all()
    # R = sigmoid(tau * (S - max over the neighbours of S))
    nbr_max = np.stack([S[i][:, nbr[i]].max(axis=2) for i in range(bcl.T)])
    assert_close(R, 1 / (1 + np.exp(-5.0 * (S - nbr_max))), rtol=1e-5, atol=1e-7, what="rank_score")
    assert_close(t["win_rate"], R.mean(axis=1), rtol=1e-5, what="win_rate = mean_b R")
    assert_close(t["image_coverage"], R.sum(axis=2), rtol=1e-5, what="image_coverage = sum_d R")
    L = np.stack([R[i][:, nbr[i]].sum(axis=2) for i in range(bcl.T)])
    assert_close(t["local_coverage"], L, rtol=1e-5, what="local_coverage = sum over N(d) of R")
    np.testing.assert_array_equal(t["local_novelty"], np.float32(1) / (t["local_coverage"] + np.float32(1)),
                                  err_msg="local_novelty = 1 / (local_coverage + 1)")


def test_in_nbr_marks_the_winners_neighbours(bcl):
    t = bcl.t
    in_nbr, R, nbr = t["in_nbr"], t["rank_score"], t["neighbors"]
    assert set(np.unique(in_nbr)) <= {0.0, 1.0}
    np.testing.assert_array_equal(in_nbr.sum(axis=2), np.full((bcl.T, B), K))
    for i in range(bcl.T):
        winner = R[i].argmax(axis=1)
        expected = np.zeros((B, D), np.float32)
        np.put_along_axis(expected, nbr[i][winner], 1.0, axis=1)
        np.testing.assert_array_equal(in_nbr[i], expected, err_msg=f"step {i}")
        # the winner is never in its own neighbourhood
        assert (in_nbr[i][np.arange(B), winner] == 0).all()


def test_neighbors_are_other_features_fixed_between_recomputations(bcl):
    nbr = bcl.t["neighbors"]
    assert nbr.dtype == np.int32 and nbr.shape == (30, D, K)
    assert nbr.min() >= 0 and nbr.max() < D
    for d in range(D):
        assert not (nbr[:, d, :] == d).any(), f"feature {d} is its own neighbour"
    assert all(len(set(row)) == K for row in nbr.reshape(-1, K)), "a neighbour is listed twice"
    # recomputed at hook calls 0, 50, ...: constant over these 30 steps
    np.testing.assert_array_equal(nbr, np.broadcast_to(nbr[0], nbr.shape))
    # ... and they are the top-k cosine neighbours of step 0's weights
    cos = cosine(bcl.t["encoder_weights"][0])
    np.fill_diagonal(cos, -np.inf)
    order = np.argsort(-cos, axis=1)
    for d in range(D):
        gap = cos[d, order[d, K - 1]] - cos[d, order[d, K]]
        if gap > 1e-6:  # (skip a tie at the k-th place, where either choice is right)
            assert set(nbr[0, d]) == set(order[d, :K]), f"feature {d}"
        assert (cos[d, nbr[0, d]] >= cos[d, order[d, K - 1]] - 1e-6).all()


def test_novelty_and_blending_weights(bcl):
    t = bcl.t
    R = f64(t["rank_score"])
    c = R.sum(axis=2)  # [T,B]
    nu = (R / (c[:, :, None] + EPS)).sum(axis=1) / (R.sum(axis=1) + EPS)
    assert_close(t["feature_novelty"], nu, rtol=1e-5, what="feature_novelty")
    nu_s, w = f64(t["feature_novelty"]), f64(t["win_rate"])
    e = w * nu_s
    assert_close(t["gradient_weight"], e, rtol=1e-5, what="gradient_weight = w * nu")
    e_s = f64(t["gradient_weight"])
    assert_close(t["contender_weight"], (1 - e_s) * w, rtol=1e-5, what="contender_weight = (1-e) * w")
    assert_close(t["attraction_weight"], (1 - e_s) * (1 - w), rtol=1e-5, what="attraction_weight = (1-e)(1-w)")
    assert_close(t["grad_mask"], R * (nu_s * e_s)[:, None, :], rtol=1e-5, atol=1e-9, what="grad_mask = R nu e")


def _column_normalised(M: np.ndarray) -> np.ndarray:
    return M / (M.sum(axis=1, keepdims=True) + EPS)


def test_som_targets(bcl):
    t, x = bcl.t, bcl.x()
    R, Ln, nbr_in = f64(t["rank_score"]), f64(t["local_novelty"]), f64(t["in_nbr"])
    nu, kappa, alpha = f64(t["feature_novelty"]), f64(t["contender_weight"]), f64(t["attraction_weight"])
    c = f64(t["image_coverage"])
    Pm = R * Ln * (1 - nu)[:, None, :] * nbr_in * kappa[:, None, :]
    local = np.einsum("tbd,tbp->tdp", _column_normalised(Pm), x)
    Q = (1 - R) * (1 / (c + EPS))[:, :, None] * alpha[:, None, :]
    glob = np.einsum("tbd,tbp->tdp", _column_normalised(Q), x)
    assert_close(t["local_target"], local, rtol=1e-4, atol=1e-6, what="local_target")
    assert_close(t["global_target"], glob, rtol=1e-4, atol=1e-6, what="global_target")
    lt, gt = f64(t["local_target"]), f64(t["global_target"])
    blend = (kappa[:, :, None] * lt + alpha[:, :, None] * gt) / (kappa + alpha + EPS)[:, :, None]
    assert_close(t["som_targets"], blend, rtol=1e-5, atol=1e-7, what="som_targets")
    # targets are weighted means of images: inside [0,1] pixelwise (up to the eps in the column sums)
    assert t["som_targets"].min() >= 0 and t["som_targets"].max() <= 1 + 1e-5


def test_som_delta(bcl):
    """som_delta = som_lr * (som_targets - W), W as the forward pass saw it (bcl-slow: som_lr 0.001)."""
    t = bcl.t
    expected = 0.001 * (f64(t["som_targets"]) - f64(t["encoder_weights"]))
    assert_close(t["som_delta"], expected, rtol=1e-5, atol=1e-10, what="som_delta")
    assert np.abs(t["som_delta"]).max() > 0
