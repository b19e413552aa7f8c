"""What the page shows, top to bottom: its sections of panels, its sortable tables and the timeline's charts.

Made from what a recording says about itself (its key table, its arrays and their dimensions), never
from the code that made it. Two layouts:

- BCL's (`bcl_layout`), for a recording of BCL's keys (vocabulary StepTensorKey, or made by
  `acc-capture run`): the batch, the nine trace sections, the per-feature table and the cosine
  section, named by key values. A key of the table that no section names still appears, in the
  collapsed "other tensors" section.
- Any other recording (`generic_layout`): a section per leading dimension, one panel per key drawn
  by its render kind with its description as the note, a table per dimension shared by several
  one-dimensional keys, and a timeline of every scalar key and every per-key norm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from capture import format as fmt

BCL_VOCABULARY = "StepTensorKey"


@dataclass(frozen=True)
class Panel:
    key: str                           # a key value of the recording's key table
    note: str = ""                     # one line under the title: what to look for
    with_keys: tuple[str, ...] = ()    # other keys the panel needs (neighbours are drawn from the weights)
    optional: tuple[str, ...] = ()     # keys it uses when present (the batch's labels)
    offdiag: bool = False              # print the mean off-diagonal entry (square matrices)

    def to_json(self) -> dict:
        return {"key": self.key, "note": self.note, "with": list(self.with_keys), "optional": list(self.optional),
                "offdiag": self.offdiag}


@dataclass(frozen=True)
class Section:
    id: str                            # the data-section attribute
    title: str
    question: str = ""
    panels: tuple[Panel, ...] = ()
    open: bool = True

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "panels": [p.to_json() for p in self.panels]}


@dataclass(frozen=True)
class Table:
    """A sortable table: one row per entry of `dim`, one column per name (a key, or a summary over [step, dim])."""
    id: str                            # the data-section attribute and the id of its container
    dim: str
    title: str
    question: str
    columns: tuple[str, ...]
    after: str                         # the section it follows ("timeline": before every step section)
    dead: bool = False                 # rows of dead features (win_rate below the threshold) are red

    def to_json(self) -> dict:
        return {"id": self.id, "dim": self.dim, "title": self.title, "columns": list(self.columns), "dead": self.dead}


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


@dataclass(frozen=True)
class Layout:
    kind: str                          # "bcl" or "generic"
    sections: tuple[Section, ...]
    tables: tuple[Table, ...]
    timeline: tuple[Chart, ...]
    timeline_heatmap: str | None       # a [T, D] summary drawn as D rows over time
    # summaries the toolbar reads for every step (`lossSeries`, shown as `reading`), and the key whose
    # values say a feature is dead (None: no such key)
    names: dict


# -- BCL ---------------------------------------------------------------------------------------------

# the keys only BCL conditions have (a `control` recording lacks them)
BCL_ONLY = frozenset({
    "strength", "rank_score", "image_coverage", "feature_novelty", "win_rate", "neighbors", "local_coverage",
    "local_novelty", "in_nbr", "gradient_weight", "contender_weight", "attraction_weight", "grad_mask", "local_target",
    "global_target", "som_targets", "som_delta", "som_target_cosine_matrix",
})

BATCH = Section("batch", "Batch", "The 128 images of this step as they entered the model, with their labels.",
                (Panel("batch_images", "labels in the corner", optional=("batch_labels",)),))

TRACE = (
    Section("trace-strength", "1 · Strength",
            "Which features light up on which images? If this is already uniform, the features are clones from the start.",
            (Panel("strength", "S = |z|: rows are images, columns are features"),)),
    Section("trace-neighborhoods", "2 · Neighbourhoods",
            "Do all neighbourhoods look the same? Are the neighbours all each other?",
            (Panel("neighbors", "each feature (left) and its 8 nearest rows of W by cosine", with_keys=("encoder_weights",)),
             Panel("encoder_weights", "W as the forward pass saw it, one 28x28 row per feature"))),
    Section("trace-rank-score", "3 · Rank score",
            "Where does each feature win its neighbourhood? Scores near 0.5 everywhere mean nobody clearly wins.",
            (Panel("rank_score", "R = sigmoid(tau (S - max over neighbours)); compare with strength"),)),
    Section("trace-image-coverage", "4 · Image coverage",
            "Which images are crowded, which underserved? Uniform coverage leaves nothing novel.",
            (Panel("image_coverage", "c[b] = sum over features of R[b, d]"),)),
    Section("trace-feature-novelty", "5 · Feature novelty",
            "Unique or redundant features? With uniform coverage every feature gets the same novelty.",
            (Panel("feature_novelty", "how unique each feature's wins are"),
             Panel("win_rate", "mean rank score per feature (red: dead, below the threshold)"))),
    Section("trace-local-coverage", "6 · Local coverage",
            "Per feature and image, how many neighbours also won?",
            (Panel("local_coverage", "L = sum of R over the feature's neighbours"),
             Panel("local_novelty", "1 / (L + 1)"))),
    Section("trace-som-targets", "7 · SOM targets",
            "Are the 64 global targets all the same image? Then the SOM pulls every feature to one place.",
            (Panel("local_target", "local pull"), Panel("global_target", "global attraction"),
             Panel("som_targets", "the blend each feature is pulled towards"))),
    Section("trace-blending-weights", "8 · Blending weights",
            "Who gets which force? Dead features should get attraction.",
            (Panel("gradient_weight", "e = win_rate x novelty"), Panel("contender_weight", "kappa = (1 - e) win_rate"),
             Panel("attraction_weight", "alpha = (1 - e)(1 - win_rate)"))),
    Section("trace-forces", "9 · Forces",
            "What gradient actually flows, and where does the SOM push each feature?",
            (Panel("grad_mask", "G = R x novelty x e: the mask on dL/dz"),
             Panel("som_targets", "the combined direction each feature is pulled"))),
)

COSINE = Section("cosine", "Cosine similarity",
                 "SOM target similarity far above weight similarity: the SOM drives the convergence. "
                 "High gradient similarity: gradient descent contributes too.",
                 (Panel("weight_cosine_matrix", "rows of encoder_weights", offdiag=True),
                  Panel("som_target_cosine_matrix", "rows of som_targets", offdiag=True),
                  Panel("grad_cosine_matrix", "rows of grad_masked", offdiag=True)))

# drawn elsewhere: the loss in the toolbar and the timeline; labels with the batch
SHOWN_ELSEWHERE = {"loss", "batch_labels"}

# the seed's per-feature table: every key with one value per feature, then the size of each
# feature's two forces (summaries kept for every step)
FORCE_MAGNITUDES = ("grad_magnitude", "som_magnitude")

BCL_TIMELINE = (
    Chart("loss", "loss (L1) — click to jump", ("loss",), ticks=True),
    Chart("dead", "dead features (win_rate < threshold)", ("dead_features",)),
    Chart("offdiag", "mean off-diagonal cosine", ("weight_cosine_offdiag", "som_target_cosine_offdiag", "grad_cosine_offdiag"),
          labels=("weights", "SOM targets", "masked gradients")),
    Chart("norms", "norms (log scale)", ("grad_raw_norm", "grad_masked_norm", "som_delta_norm", "update_norm"), log=True,
          labels=("grad_raw", "grad_masked", "som_delta", "update")),
)


def is_bcl(meta: dict) -> bool:
    """Whether a recording's root attributes describe a recording of BCL's keys."""
    return meta.get("vocabulary") == BCL_VOCABULARY or meta.get("recipe") == fmt.BCL_RECIPE


def bcl_layout(key_table: list[dict]) -> Layout:
    named = {k for s in (BATCH, *TRACE, COSINE) for p in s.panels for k in (p.key, *p.with_keys, *p.optional)}
    rest = tuple(Panel(e["key"]) for e in key_table if e["key"] not in named and e["key"] not in SHOWN_ELSEWHERE)
    other = Section("other", "Other tensors", "Every other captured tensor of this step.", rest, open=False)
    per_feature = tuple(e["key"] for e in key_table if e["dims"] == ["feature"]) + FORCE_MAGNITUDES
    metrics = Table("metrics", "feature", "Per-feature metrics",
                    "Every tensor with one value per feature, and the L2 norm of each feature's row of grad_masked "
                    "(grad_magnitude) and som_delta (som_magnitude); click a header to sort. Red rows: dead features "
                    f"(win_rate < {fmt.DEAD_WIN_RATE}).", per_feature, after="batch", dead=True)
    return Layout("bcl", (BATCH, *TRACE, COSINE, other), (metrics,), BCL_TIMELINE, "win_rate",
                  {"full": fmt.FULL_CAPTURE, "nonfinite": fmt.NONFINITE, "lossSeries": "loss", "reading": "loss",
                   "dead": "win_rate"})


# -- any other recording -------------------------------------------------------------------------------

MAX_SERIES = 6  # norms in one chart at most


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _square(n: int | None) -> bool:
    return bool(n) and round(n ** 0.5) ** 2 == n


def generic_layout(key_table: list[dict], summaries: dict[str, list[str]], sizes: dict[str, int]) -> Layout:
    """The page of a recording of any vocabulary: `summaries` maps each summary to its dimensions
    (after the step), `sizes` each dimension of the stored tensors to its size."""
    entries = {e["key"]: e for e in key_table}
    labels = [e for e in key_table if e["render"] == "labels" and len(e["dims"]) == 1]
    weights = [e for e in key_table if e["render"] == "weights" and len(e["dims"]) == 2
               and _square(sizes.get(e["dims"][1]))]

    def panel(e: dict) -> Panel:
        optional: tuple[str, ...] = ()
        with_keys: tuple[str, ...] = ()
        if e["render"] == "images" and e["dims"]:
            optional = tuple(lab["key"] for lab in labels if lab["dims"][0] == e["dims"][0])[:1]
        if e["render"] == "neighbors" and len(e["dims"]) == 2:  # neighbour lists drawn with the rows they index
            with_keys = tuple(w["key"] for w in weights if w["dims"][0] == e["dims"][0])[:1]
        return Panel(e["key"], e.get("description", ""), with_keys, optional)

    groups: dict[str, list[dict]] = {"": []}  # the scalars first: small, and what a run is judged by
    for e in key_table:
        groups.setdefault(e["dims"][0] if e["dims"] else "", []).append(e)
    sections = []
    for dim, members in groups.items():
        if not members:
            continue
        keys = ", ".join(e["key"] for e in members)
        if dim:
            sections.append(Section(f"keys-{_slug(dim)}", f"By {dim}", f"{keys}: tensors whose first dimension is {dim}.",
                                    tuple(panel(e) for e in members)))
        else:
            sections.append(Section("keys-scalars", "Scalars", f"{keys}: one number a step (over all steps: the timeline).",
                                    tuple(panel(e) for e in members)))

    by_dim: dict[str, list[str]] = {}
    for e in key_table:
        if len(e["dims"]) == 1:
            by_dim.setdefault(e["dims"][0], []).append(e["key"])
    tables = tuple(Table(f"table-{_slug(dim)}", dim, f"Per-{dim} values",
                         f"Every key with one value per {dim}; click a header to sort.", tuple(cols), after="timeline")
                   for dim, cols in by_dim.items() if len(cols) >= 2)

    scalars = [e["key"] for e in key_table if not e["dims"] and e["key"] in summaries and not summaries[e["key"]]]
    charts = [Chart(f"scalar-{_slug(k)}", " — ".join(filter(None, (k, entries[k].get("description")))), (k,))
              for k in scalars]
    norms: dict[str, list[str]] = {}  # render kind -> keys with a norm summary
    for e in key_table:
        if e["dims"] and f"{e['key']}_norm" in summaries:
            norms.setdefault(e["render"], []).append(e["key"])
    for render, keys in norms.items():
        for i in range(0, len(keys), MAX_SERIES):
            part = keys[i:i + MAX_SERIES]
            charts.append(Chart(f"norms-{render}-{i // MAX_SERIES}", f"norm of {', '.join(part)} (log scale)",
                                tuple(f"{k}_norm" for k in part), log=True, labels=tuple(part)))
    if charts:
        charts[0] = replace(charts[0], ticks=True)
    reading = "loss" if "loss" in scalars else (scalars[0] if scalars else None)
    return Layout("generic", tuple(sections), tables, tuple(charts), None,
                  {"full": fmt.FULL_CAPTURE, "nonfinite": fmt.NONFINITE, "lossSeries": reading, "reading": reading,
                   "dead": None})
