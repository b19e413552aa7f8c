"""What the page shows, top to bottom: its sections, their panels and the timeline's charts.

Panels name `StepTensorKey` members, never strings, so renaming a key changes the page with it;
how a panel draws comes from the key's `render`. A key that no section names still appears, in
the collapsed "other tensors" section, drawn by its `render`: adding a tensor to the enum is
enough for the viewer to show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acc.step_inspector import StepTensorKey as K
from capture import format as fmt


@dataclass(frozen=True)
class Panel:
    key: K
    note: str = ""                     # one line under the title: what to look for
    with_keys: tuple[K, ...] = ()      # other keys the panel needs (neighbours are drawn from the weights)
    optional: tuple[K, ...] = ()       # keys it uses when present (the batch's labels)
    offdiag: bool = False              # print the mean off-diagonal entry (square matrices)

    def to_json(self) -> dict:
        return {"key": self.key.value, "note": self.note, "with": [k.value for k in self.with_keys],
                "optional": [k.value for k in self.optional], "offdiag": self.offdiag}


@dataclass(frozen=True)
class Section:
    id: str                            # the data-section attribute
    title: str
    question: str = ""
    panels: tuple[Panel, ...] = ()
    open: bool = True

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "panels": [p.to_json() for p in self.panels]}


BATCH = Section("batch", "Batch", "The 128 images of this step as they entered the model, with their labels.",
                (Panel(K.BATCH_IMAGES, "labels in the corner", optional=(K.BATCH_LABELS,)),))

TRACE = (
    Section("trace-strength", "1 · Strength",
            "Which features light up on which images? If this is already uniform, the features are clones from the start.",
            (Panel(K.STRENGTH, "S = |z|: rows are images, columns are features"),)),
    Section("trace-neighborhoods", "2 · Neighbourhoods",
            "Do all neighbourhoods look the same? Are the neighbours all each other?",
            (Panel(K.NEIGHBORS, "each feature (left) and its 8 nearest rows of W by cosine", with_keys=(K.ENCODER_WEIGHTS,)),
             Panel(K.ENCODER_WEIGHTS, "W as the forward pass saw it, one 28x28 row per feature"))),
    Section("trace-rank-score", "3 · Rank score",
            "Where does each feature win its neighbourhood? Scores near 0.5 everywhere mean nobody clearly wins.",
            (Panel(K.RANK_SCORE, "R = sigmoid(tau (S - max over neighbours)); compare with strength"),)),
    Section("trace-image-coverage", "4 · Image coverage",
            "Which images are crowded, which underserved? Uniform coverage leaves nothing novel.",
            (Panel(K.IMAGE_COVERAGE, "c[b] = sum over features of R[b, d]"),)),
    Section("trace-feature-novelty", "5 · Feature novelty",
            "Unique or redundant features? With uniform coverage every feature gets the same novelty.",
            (Panel(K.FEATURE_NOVELTY, "how unique each feature's wins are"),
             Panel(K.WIN_RATE, "mean rank score per feature (red: dead, below the threshold)"))),
    Section("trace-local-coverage", "6 · Local coverage",
            "Per feature and image, how many neighbours also won?",
            (Panel(K.LOCAL_COVERAGE, "L = sum of R over the feature's neighbours"),
             Panel(K.LOCAL_NOVELTY, "1 / (L + 1)"))),
    Section("trace-som-targets", "7 · SOM targets",
            "Are the 64 global targets all the same image? Then the SOM pulls every feature to one place.",
            (Panel(K.LOCAL_TARGET, "local pull"), Panel(K.GLOBAL_TARGET, "global attraction"),
             Panel(K.SOM_TARGETS, "the blend each feature is pulled towards"))),
    Section("trace-blending-weights", "8 · Blending weights",
            "Who gets which force? Dead features should get attraction.",
            (Panel(K.GRADIENT_WEIGHT, "e = win_rate x novelty"), Panel(K.CONTENDER_WEIGHT, "kappa = (1 - e) win_rate"),
             Panel(K.ATTRACTION_WEIGHT, "alpha = (1 - e)(1 - win_rate)"))),
    Section("trace-forces", "9 · Forces",
            "What gradient actually flows, and where does the SOM push each feature?",
            (Panel(K.GRAD_MASK, "G = R x novelty x e: the mask on dL/dz"),
             Panel(K.SOM_TARGETS, "the combined direction each feature is pulled"))),
)

COSINE = Section("cosine", "Cosine similarity",
                 "SOM target similarity far above weight similarity: the SOM drives the convergence. "
                 "High gradient similarity: gradient descent contributes too.",
                 (Panel(K.WEIGHT_COSINE_MATRIX, "rows of encoder_weights", offdiag=True),
                  Panel(K.SOM_TARGET_COSINE_MATRIX, "rows of som_targets", offdiag=True),
                  Panel(K.GRAD_COSINE_MATRIX, "rows of grad_masked", offdiag=True)))

# drawn elsewhere: the loss in the toolbar and the timeline; labels with the batch
SHOWN_ELSEWHERE = {K.LOSS, K.BATCH_LABELS}


def other_section() -> Section:
    named = {k for s in (BATCH, *TRACE, COSINE) for p in s.panels for k in (p.key, *p.with_keys, *p.optional)}
    rest = tuple(Panel(k) for k in K if k not in named and k not in SHOWN_ELSEWHERE)
    return Section("other", "Other tensors", "Every other captured tensor of this step.", rest, open=False)


def sections() -> list[Section]:
    """The step sections, top to bottom (the metrics table sits between batch and the trace)."""
    return [BATCH, *TRACE, COSINE, other_section()]


def metric_columns() -> list[str]:
    """The table's columns: every key with one value per feature."""
    return [k.value for k in K if k.dims == ("feature",)]


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    series: tuple[str, ...]            # summary names
    log: bool = False
    labels: tuple[str, ...] = field(default=())
    ticks: bool = False                # mark steps without full tensors and steps with non-finite values

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "series": list(self.series), "log": self.log,
                "labels": list(self.labels or self.series), "ticks": self.ticks}


# summaries the toolbar reads for every step, and the key that says a feature is dead
NAMES = {"full": fmt.FULL_CAPTURE, "nonfinite": "nonfinite", "lossSeries": K.LOSS.value, "dead": K.WIN_RATE.value}

TIMELINE = (
    Chart("loss", "loss (L1) — click to jump", ("loss",), ticks=True),
    Chart("dead", "dead features (win_rate < threshold)", ("dead_features",)),
    Chart("offdiag", "mean off-diagonal cosine", ("weight_cosine_offdiag", "som_target_cosine_offdiag", "grad_cosine_offdiag"),
          labels=("weights", "SOM targets", "masked gradients")),
    Chart("norms", "norms (log scale)", ("grad_raw_norm", "grad_masked_norm", "som_delta_norm", "update_norm"), log=True,
          labels=("grad_raw", "grad_masked", "som_delta", "update")),
)
TIMELINE_HEATMAP = "win_rate"          # a [T, D] summary drawn as features over time
