"""Where two recordings part: `diff(a, b)` compares them step by step, key by key, and says where they first differ.

Keys are compared in the order of A's key table, steps in order; a key whose values name things
(class labels, neighbour indices: `Recording.named_keys`) is equal or not, whatever `atol`.
Once a key differs, the rest of it is not read (unless `whole`). A file (a shard of 20 steps, or a chunk of many) that is byte for
byte the same in both recordings holds the same values, so it is not decoded at all: two identical
recordings compare at the speed of reading their files.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from capture import format as fmt
from capture.recording import Recording, RecordingError, _read_row, _zarr_read

# the settings compared and reported (dicts are compared field by field, e.g. config.bcl.som_lr)
SETTINGS = ("condition", "seed", "device", "config", "policy", "versions")


class DiffError(ValueError):
    """Two recordings that cannot be compared (no key in common, a step range outside both); one line."""


@dataclass
class KeyDiff:
    """How one tensor key (or summary) compares over the steps read."""

    first_step: int | None = None  # the first step at which A and B differ (None: none does)
    elements: int | None = None  # elements that differ at first_step
    step_max_abs_diff: float | None = None  # max |A - B| at first_step
    max_abs_diff: float | None = None  # max |A - B| over the steps read (up to first_step, or all with `whole`)
    steps_compared: int = 0  # steps at which both have the values (a key: full tensors in both)
    steps_differing: int | None = None  # with `whole` only
    shapes: tuple[list[int], list[int]] | None = None  # the per-step shapes of A and B, when they differ
    named: bool = False  # values that name things (labels, indices): compared exactly, no max |A - B|

    @property
    def differs(self) -> bool:
        return self.first_step is not None or self.shapes is not None


@dataclass
class DiffResult:
    """What `diff(a, b)` found; `to_text()` is the command's report, `to_dict()` / `to_json()` its --json."""

    a: str
    b: str
    steps: tuple[int, int]  # steps completed in A and in B
    requested: tuple[int, int]  # the steps asked for, inclusive, cut to the longer recording
    compared: tuple[int, int] | None  # the steps of those both have (None: none)
    atol: float
    whole: bool
    settings: dict[str, tuple[Any, Any]]  # the settings that differ: dotted name -> (A's, B's); None where absent
    keys: dict[str, KeyDiff]  # the keys both have, in A's key-table order
    summaries: dict[str, KeyDiff]
    only_a: list[str] = field(default_factory=list)  # keys only A has
    only_b: list[str] = field(default_factory=list)
    summaries_only_a: list[str] = field(default_factory=list)
    summaries_only_b: list[str] = field(default_factory=list)

    @property
    def lengths_differ(self) -> bool:
        """Some step of the range asked for is in one recording only."""
        last_compared = self.compared[1] if self.compared else self.requested[0] - 1
        return self.requested[1] > last_compared

    @property
    def first_key(self) -> str | None:
        """The first key (in key order) that differs at the first differing step."""
        firsts = [(d.first_step, i) for i, d in enumerate(self.keys.values()) if d.first_step is not None]
        return list(self.keys)[min(firsts)[1]] if firsts else None

    @property
    def first_step(self) -> int | None:
        return self.keys[self.first_key].first_step if self.first_key else None

    @property
    def identical(self) -> bool:
        """Same keys, same summaries, same length, and every value equal (bit for bit, or within atol).
        Settings are reported, not judged: two runs can differ in versions and still agree bit for bit."""
        return not (self.lengths_differ or self.only_a or self.only_b or self.summaries_only_a or self.summaries_only_b
                    or any(d.differs for d in [*self.keys.values(), *self.summaries.values()]))

    def to_dict(self) -> dict:
        """The facts as plain JSON values (a max |A - B| that is infinite or NaN becomes null)."""
        def key(d: KeyDiff) -> dict:
            out = asdict(d)
            for name in ("step_max_abs_diff", "max_abs_diff"):
                if out[name] is not None and not math.isfinite(out[name]):
                    out[name] = None
            out["shapes"] = {"a": d.shapes[0], "b": d.shapes[1]} if d.shapes else None
            return out

        def pair(name: str) -> dict | None:
            return {"a": self.settings[name][0], "b": self.settings[name][1]} if name in self.settings else None

        def group(prefix: str) -> dict:
            return {name[len(prefix) + 1:]: {"a": a, "b": b} for name, (a, b) in self.settings.items()
                    if name.startswith(prefix + ".") or name == prefix}

        first = self.keys.get(self.first_key) if self.first_key else None
        return {
            "a": self.a, "b": self.b, "identical": self.identical,
            "first_step": self.first_step, "first_key": self.first_key,
            "first_elements": first.elements if first else None,
            "first_max_abs_diff": key(first)["step_max_abs_diff"] if first else None,
            "steps": {"a": self.steps[0], "b": self.steps[1], "requested": list(self.requested),
                      "compared": list(self.compared) if self.compared else None,
                      "lengths_differ": self.lengths_differ},
            "atol": self.atol, "whole": self.whole,
            "condition": pair("condition"), "seed": pair("seed"), "device": pair("device"),
            "config": group("config"), "policy": group("policy"), "versions": group("versions"),
            "keys": {k: key(d) for k, d in self.keys.items()},
            "summaries": {k: key(d) for k, d in self.summaries.items()},
            "only_a": {"keys": self.only_a, "summaries": self.summaries_only_a},
            "only_b": {"keys": self.only_b, "summaries": self.summaries_only_b},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        """The report `acc-capture diff` prints: settings, the first difference, then every key and summary."""
        lines = [f"A  {self.a}  ({self.steps[0]} steps)", f"B  {self.b}  ({self.steps[1]} steps)", ""]
        if self.settings:
            width = max(map(len, self.settings))
            lines.append("settings that differ:")
            lines += [f"  {name:<{width}}  A {_show(a)}  B {_show(b)}" for name, (a, b) in self.settings.items()]
        else:
            lines.append("settings: the same (condition, seed, device, config, policy, versions)")
        if self.steps[0] != self.steps[1]:
            lines.append(f"lengths differ: A has {self.steps[0]} steps, B {self.steps[1]}")
        how = "bit for bit" if self.atol == 0 else f"within atol {self.atol:g}"
        span = f"steps {self.compared[0]}..{self.compared[1]}" if self.compared else "no step in common"
        lines += ["", f"compared {span}, {how}"]
        if self.first_key:
            d = self.keys[self.first_key]
            lines.append(f"first difference: step {d.first_step}, key {self.first_key}: " + _detail(d))
        else:
            lines.append("first difference: none in the tensors")
        for title, table in (("keys", self.keys), ("summaries", self.summaries)):
            lines += ["", f"{title} (first differing step):"]
            width = max(map(len, table), default=0)
            lines += [f"  {name:<{width}}  {_verdict(d, self.whole)}" for name, d in table.items()]
        for who, keys, sums in (("A", self.only_a, self.summaries_only_a), ("B", self.only_b, self.summaries_only_b)):
            if keys:
                lines.append(f"keys only {who} has: {', '.join(keys)}")
            if sums:
                lines.append(f"summaries only {who} has: {', '.join(sums)}")
        lines += ["", "identical" if self.identical else "the recordings differ"]
        return "\n".join(lines)


def _show(value: Any) -> str:
    return "-" if value is None else json.dumps(value) if isinstance(value, (list, dict, str)) else str(value)


def _detail(d: KeyDiff) -> str:
    """What differs at the first differing step."""
    if d.shapes:
        return f"shapes differ: {d.shapes[0]} vs {d.shapes[1]}"
    value = d.step_max_abs_diff
    size = "1 element differs" if d.elements == 1 else f"{d.elements} elements differ"
    if d.named:
        return size
    return f"{size}, max |A - B| {value:.6g}" if math.isfinite(value) else f"{size}, a NaN or infinity on one side"


def _verdict(d: KeyDiff, whole: bool) -> str:
    if d.first_step is None and d.shapes is None:
        if d.steps_compared == 0:
            return "not compared (no step with full tensors in both)"
        return "identical" if not d.max_abs_diff else f"identical (max |A - B| {d.max_abs_diff:.3g})"
    if d.first_step is None:
        return _detail(d)
    text = f"step {d.first_step}  ({_detail(d)})"
    if whole and d.steps_differing is not None:
        text += f"  {d.steps_differing} of {d.steps_compared} steps differ"
        if not d.named:
            overall = f"max |A - B| {d.max_abs_diff:.6g}" if math.isfinite(d.max_abs_diff) else "a NaN or infinity"
            text += f", {overall} over them"
    return text


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {k: v for name, sub in value.items() for k, v in _flat(sub, f"{prefix}.{name}").items()}
    return {prefix: value}


def _settings(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    fa = {k: v for s in SETTINGS for k, v in _flat(a.get(s), s).items()}
    fb = {k: v for s in SETTINGS for k, v in _flat(b.get(s), s).items()}
    names = [*fa, *(k for k in fb if k not in fa)]
    return {k: (fa.get(k), fb.get(k)) for k in names if fa.get(k) != fb.get(k)}


def _compare(a: np.ndarray, b: np.ndarray, atol: float) -> tuple[int, float]:
    """How many elements of `a` and `b` differ, and the max |a - b| (inf when a NaN or an infinity
    stands against something else). NaN equals NaN in the same place. `atol` 0: bit for bit."""
    if atol == 0 and a.dtype == b.dtype:
        bits = np.dtype(f"u{a.dtype.itemsize}")
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        if np.array_equal(a.view(bits), b.view(bits)):
            return 0, 0.0
    x, y = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        same_place = (x == y) | (np.isnan(x) & np.isnan(y))
        d = np.where(same_place, 0.0, np.abs(x - y))
    if atol == 0 and a.dtype == b.dtype:  # bit for bit (tells -0.0 from 0.0 too)
        differ = (a.view(bits) != b.view(bits)) & ~(np.isnan(x) & np.isnan(y))
    else:
        differ = ~(d <= atol)  # NaN against a number differs
    biggest = float(d.max()) if d.size else 0.0
    return int(differ.sum()), (math.inf if math.isnan(biggest) else biggest)


class _Rows:
    """The steps of one array, read with the recording's fast reader; a plain chunk of many steps
    (a small tensor) is decoded once for all of them."""

    def __init__(self, rec: Recording, key: str):
        self.rec, self.arr = rec, rec.tensors[key]
        self.files = fmt.file_layout(self.arr)
        self._chunk: tuple[int, np.ndarray | None] = (-1, None)

    def file(self, index: int) -> tuple[int, str | None]:
        """The size of file `index` and its key in the store ((-1, None): no such file)."""
        key = fmt.chunk_key(self.arr, index)
        try:
            return self.rec.store.size(key), key
        except FileNotFoundError:
            return -1, None

    def same_file(self, other: _Rows, index: int) -> bool:
        """Whether file `index` holds the same bytes in both (read only when the sizes agree)."""
        (size, key), (other_size, other_key) = self.file(index), other.file(index)
        if size != other_size:
            return False
        return key is None or self.rec.store.get(key) == other.rec.store.get(other_key)

    def __getitem__(self, n: int) -> np.ndarray:
        if self.files is None or self.files.sharded:
            return _read_row(self.rec.store, self.arr, self.files, n, kept=bool(self.rec.full_capture[n]))
        index, row = divmod(n, self.files.steps)
        if self._chunk[0] != index:
            start = index * self.files.steps
            self._chunk = (index, _zarr_read(self.rec.store, self.arr, slice(start, start + self.files.steps)))
        return self._chunk[1][row]


_POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="acc-capture-diff")  # keys side by side


def _scan(pairs: Iterable[tuple[int, np.ndarray, np.ndarray]], steps: int, atol: float, whole: bool) -> KeyDiff:
    """Compare (step, A, B) in step order until the first difference (to the end if `whole`)."""
    result = KeyDiff(max_abs_diff=0.0, steps_compared=steps, steps_differing=0 if whole else None)
    for n, a, b in pairs:
        count, biggest = _compare(a, b, atol)
        result.max_abs_diff = max(result.max_abs_diff, biggest)
        if count:
            if result.first_step is None:
                result.first_step, result.elements, result.step_max_abs_diff = n, count, biggest
            if not whole:
                break
            result.steps_differing += 1
    return result


def _compare_key(ra: Recording, rb: Recording, key: str, steps: list[int], atol: float, whole: bool) -> KeyDiff:
    a, b = _Rows(ra, key), _Rows(rb, key)
    if a.arr.shape[1:] != b.arr.shape[1:]:
        return KeyDiff(first_step=steps[0] if steps else None, steps_compared=len(steps),
                       shapes=(list(a.arr.shape[1:]), list(b.arr.shape[1:])))
    # the same layout and dtype: a file with the same bytes in both holds the same values, unread
    same_layout = a.files is not None and a.files == b.files and a.arr.dtype == b.arr.dtype

    def pairs():
        index, same_file = -1, False
        for n in steps:
            if same_layout and n // a.files.steps != index:
                index = n // a.files.steps
                same_file = a.same_file(b, index)
            if not (same_layout and same_file):
                yield n, a[n], b[n]
    return _scan(pairs(), len(steps), atol, whole)


def _compare_summary(ra: Recording, rb: Recording, name: str, lo: int, hi: int, atol: float, whole: bool) -> KeyDiff:
    a, b = (_zarr_read(r.store, r.summaries[name], slice(lo, hi + 1)) for r in (ra, rb))
    if a.shape[1:] != b.shape[1:]:
        return KeyDiff(first_step=lo, steps_compared=len(a), shapes=(list(a.shape[1:]), list(b.shape[1:])))
    same = _compare(a, b, 0.0)[0] == 0  # bit for bit over all the steps at once: nothing to look for
    return _scan(() if same else ((lo + i, a[i], b[i]) for i in range(len(a))), len(a), atol, whole)


def parse_steps(text: str) -> tuple[int, int]:
    """'5-20' -> (5, 20), inclusive; '7' -> (7, 7)."""
    lo, sep, hi = text.strip().partition("-")
    try:
        first, last = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise DiffError(f"--steps {text!r} is not a step or a range like 0-50") from None
    if first < 0 or last < first:
        raise DiffError(f"--steps {text!r} is not a range of steps (need 0 <= start <= end)")
    return first, last


def _open(r: str | Path | Recording) -> Recording:
    return r if isinstance(r, Recording) else Recording.open(r)


def diff(a: str | Path | Recording, b: str | Path | Recording, *, steps: tuple[int, int] | None = None,
         atol: float = 0.0, whole: bool = False) -> DiffResult:
    """Compare recording `a` with `b` over `steps` (inclusive; default: all) and say where they first
    differ. Values are equal bit for bit, or within `atol`; NaN equals NaN in the same place.
    `whole`: read every key over the whole range (max |A - B| over all steps), not only up to its
    first difference. Raises RecordingError for a path that is not a recording, DiffError for two
    recordings that cannot be compared."""
    ra, rb = _open(a), _open(b)
    if not atol >= 0:
        raise DiffError(f"--atol must be a number >= 0, not {atol}")
    common_keys = [k for k in ra.keys if k in rb.tensors]
    if not common_keys:
        raise DiffError(f"no tensor key in common: A has {', '.join(ra.keys) or 'none'}; B has {', '.join(rb.keys) or 'none'}")
    longest, common = max(ra.steps, rb.steps), min(ra.steps, rb.steps)
    lo, hi = steps if steps is not None else (0, longest - 1)
    if steps is not None and (lo < 0 or hi < lo):
        raise DiffError(f"steps {lo}-{hi} are not a range of steps (need 0 <= start <= end)")
    if steps is not None and lo >= longest:
        raise DiffError(f"steps {lo}-{hi} lie beyond both recordings (A has {ra.steps} steps, B {rb.steps})")
    hi = min(hi, longest - 1)
    last = min(hi, common - 1)  # the last step both have
    compared = (lo, last) if lo <= last else None
    both_full = ra.full_capture[lo:last + 1] & rb.full_capture[lo:last + 1] if compared else np.zeros(0, bool)
    full = [lo + int(i) for i in np.flatnonzero(both_full)]
    sums = [s for s in ra.summaries if s in rb.summaries]
    named = ra.named_keys | rb.named_keys

    def compare_key(key: str) -> KeyDiff:
        if key not in named:
            return _compare_key(ra, rb, key, full, atol, whole)
        # values that name things are equal or not, whatever atol, and have no max |A - B|
        d = _compare_key(ra, rb, key, full, 0.0, whole)
        return replace(d, named=True, step_max_abs_diff=None, max_abs_diff=None)
    return DiffResult(
        a=str(ra.path), b=str(rb.path), steps=(ra.steps, rb.steps), requested=(lo, hi), compared=compared,
        atol=float(atol), whole=whole, settings=_settings(ra.meta, rb.meta),
        keys=dict(zip(common_keys, _POOL.map(compare_key, common_keys))),
        summaries={s: _compare_summary(ra, rb, s, lo, last, atol, whole) for s in sorted(sums)} if compared else {},
        only_a=[k for k in ra.keys if k not in rb.tensors], only_b=[k for k in rb.keys if k not in ra.tensors],
        summaries_only_a=sorted(set(ra.summaries) - set(rb.summaries)),
        summaries_only_b=sorted(set(rb.summaries) - set(ra.summaries)),
    )
