"""Property-based tests: no generated input to the option parsing or the metadata reader gives anything
but a result or one clean line.

- `make_config` with generated numbers: a config whose every setting is in range, or a ValueError of
  one line; which of the two is decided here independently of the code under test.
- `parse_ranges` with generated text: ranges with 0 <= start <= end, or a ValueError of one line.
- `Recording.open` on a recording whose `zarr.json` holds generated `attributes.acc_capture` content,
  mostly a real recording's metadata with one field changed or removed: a Recording, or a
  RecordingError of one line; never another exception.

The examples are drawn the same way on every run (derandomized), so the suite never fails by chance;
`ACC_EXPLORE=N` draws N fresh ones per test instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import sys
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from acc.conditions import CONDITIONS, MAX_LR, TRAIN_IMAGES, RunConfig, check_seed, make_config
from capture import format as fmt
from capture.recording import Recording, RecordingError
from conftest import assert_one_line

# ACC_EXPLORE=N: draw N fresh random examples per test instead (to hunt for new failures)
EXPLORE = int(os.environ.get("ACC_EXPLORE", "0"))
SETTINGS = settings(derandomize=not EXPLORE, database=None, deadline=None, max_examples=EXPLORE or 100,
                    suppress_health_check=[HealthCheck.too_slow])


# -- make_config ------------------------------------------------------------------------------------

def numbers() -> st.SearchStrategy:
    """None (not set), or a number of any kind a caller might pass: edge cases, NaN, Inf, huge integers,
    whole floats, booleans."""
    return st.one_of(
        st.none(),
        st.sampled_from([0, 1, 2, -1, 63, 64, 65, TRAIN_IMAGES, TRAIN_IMAGES + 1, 0.0, -0.0, 1e-300, 5e-324, MAX_LR, 1e38,
                         2**64 - 1, 2**64,
                         float("nan"), float("inf"), float("-inf"), True, False, 10**400]),
        st.integers(min_value=-(10**20), max_value=10**20),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def valid(condition: str, batch_size, lr, som_lr, neighborhood_k, temperature, recompute_every) -> bool:
    """Whether a run can train with these settings (None: the condition's own)."""
    if condition not in CONDITIONS:
        return False
    base = CONDITIONS[condition]
    bcl = {"som_lr": som_lr, "neighborhood_k": neighborhood_k, "temperature": temperature, "recompute_every": recompute_every}
    if base.bcl is None and any(v is not None for v in bcl.values()):
        return False
    ok = (batch_size is None or (_int(batch_size) and 1 <= batch_size <= TRAIN_IMAGES)) and (
        lr is None or (_finite(lr) and 0 < lr <= MAX_LR))
    if base.bcl is not None:
        ok = ok and (som_lr is None or (_finite(som_lr) and som_lr >= 0))
        ok = ok and (temperature is None or (_finite(temperature) and temperature > 0))
        ok = ok and (neighborhood_k is None or (_int(neighborhood_k) and 1 <= neighborhood_k < base.hidden_dim))
        ok = ok and (recompute_every is None or (_int(recompute_every) and recompute_every >= 1))
    return ok


@SETTINGS
@given(condition=st.sampled_from([*CONDITIONS, "nope", "", "BCL-SLOW"]), batch_size=numbers(), lr=numbers(),
       som_lr=numbers(), neighborhood_k=numbers(), temperature=numbers(), recompute_every=numbers())
def test_make_config_gives_a_config_in_range_or_one_line(condition, batch_size, lr, som_lr, neighborhood_k, temperature,
                                                          recompute_every):
    settings_ = dict(batch_size=batch_size, lr=lr, som_lr=som_lr, neighborhood_k=neighborhood_k, temperature=temperature,
                     recompute_every=recompute_every)
    expect = valid(condition, **settings_)
    try:
        cfg = make_config(condition, **settings_)
    except ValueError as e:
        assert_one_line(str(e))
        assert not expect, f"refused settings a run can train with: {e}"
        named = [k for k, v in settings_.items() if v is not None and k.split("_")[0] in str(e)]
        assert named or "condition" in str(e), f"the error names no setting: {e}"
        return
    assert expect, f"accepted settings no run can train with: {cfg}"
    assert cfg.condition == condition
    for name, value in settings_.items():
        if value is not None:
            where = cfg if name in ("batch_size", "lr") else cfg.bcl
            assert getattr(where, name) == value
    # what a recording stores reads back as the same configuration
    assert RunConfig.from_dict(condition, json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_make_config_refuses_what_the_issue_names():
    for kw, word in [(dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(som_lr=float("nan"), temperature=-5.0), "som_lr"),
                     (dict(temperature=-5.0), "temperature"), (dict(batch_size=100_000), "batch_size"), (dict(lr=1e38), "lr"),
                     (dict(neighborhood_k=64), "neighborhood_k"), (dict(recompute_every=0), "recompute_every")]:
        with pytest.raises(ValueError) as e:
            make_config("bcl-slow", **kw)
        assert_one_line(str(e.value), word)


# -- parse_ranges -----------------------------------------------------------------------------------

range_text = st.one_of(
    st.text(),  # anything at all
    st.text(alphabet="0123456789-,+ _x\n", max_size=30),
    st.lists(st.tuples(st.integers(-5, 10**6), st.one_of(st.none(), st.integers(-5, 10**6))), max_size=5).map(
        lambda parts: ",".join(f"{a}" if b is None else f"{a}-{b}" for a, b in parts)),
)


@SETTINGS
@given(text=range_text)
def test_parse_ranges_gives_ranges_or_one_line(text):
    try:
        ranges = fmt.parse_ranges(text)
    except ValueError as e:
        assert_one_line(str(e), "--full-steps")
        return
    assert all(_int(a) and _int(b) and 0 <= a <= b for a, b in ranges), ranges
    # and they say the same written back
    assert fmt.parse_ranges(",".join(f"{a}-{b}" for a, b in ranges)) == ranges


@SETTINGS
@given(ranges=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)).map(sorted), min_size=1, max_size=6))
def test_parse_ranges_reads_what_a_user_writes(ranges):
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)
    assert fmt.parse_ranges(text) == [tuple(r) for r in ranges]


# -- the metadata reader ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def meta_dir(bcl_rec, tmp_path_factory) -> Path:
    """The metadata of the 30-step bcl recording (every zarr.json, none of the data): all `Recording.open` reads."""
    path = tmp_path_factory.mktemp("properties") / "rec"
    for f in bcl_rec.rglob("zarr.json"):
        (path / f.parent.relative_to(bcl_rec)).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, path / f.relative_to(bcl_rec))
    Recording.open(path)  # as copied, it opens
    return path


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)),
    max_leaves=6,
)


def near(value) -> st.SearchStrategy:
    """Values close to `value` that a damaged or hand-edited file might hold instead."""
    if value is None:
        return st.sampled_from([0, -1, 1, 2**64, 1.5, "", "null", [], {}, False])
    if isinstance(value, bool):
        return st.sampled_from([not value, 0, 1, "true", None])
    if isinstance(value, int):
        return st.sampled_from([-1, 0, value + 1, -value, 2**63, 2**64 + 5, 10**30, float(value), str(value), True, None])
    if isinstance(value, float):
        whole = int(value) if math.isfinite(value) else 0
        return st.sampled_from([0.0, -value, float("nan"), float("inf"), -1.0, 1e308, str(value), whole, None])
    if isinstance(value, str):
        return st.sampled_from(["", value.upper(), value + "x", "nope", 5, [value], {value: 1}, None])
    if isinstance(value, list):
        return st.one_of(st.just([]), st.just(value[:1] * 2), st.just(value + value[:1]), st.just({"0": value}),
                         st.just(value[::-1]))
    return st.one_of(st.just({}), st.just([value]), st.just(list(value)))


def paths(value, prefix=()) -> list[tuple]:
    """The path of every node under `value` (keys of dicts, indexes of lists)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):  # (a long list: its first entries stand for the rest)
            out += paths(v, prefix + (i,))
    return out


def mutate(meta: dict, data) -> tuple[dict, str]:
    """A deep copy of `meta` with one node replaced or removed; what was done, for the report."""
    meta = json.loads(json.dumps(meta))
    path = data.draw(st.sampled_from(paths(meta)), label="field")
    parent = meta
    for p in path[:-1]:
        parent = parent[p]
    last, old = path[-1], parent[path[-1]]
    how = data.draw(st.sampled_from(["near", "any", "remove"]), label="how")
    where = ".".join(map(str, path))
    if how == "remove":
        del parent[last]
        return meta, f"removed {where}"
    new = data.draw(near(old) if how == "near" else json_values, label="value")
    parent[last] = new
    return meta, f"{where} = {json.dumps(new)[:200]}"


def write_meta(path: Path, meta) -> None:
    doc = json.loads((path / "zarr.json.orig").read_text())
    doc["attributes"][fmt.ATTRS_KEY] = meta
    (path / "zarr.json").write_text(json.dumps(doc))


def open_or_one_line(path: Path, what: str) -> Recording | None:
    """Recording.open(path): a Recording, or None after a one-line RecordingError; anything else fails,
    naming the field and value that caused it."""
    try:
        return Recording.open(path)
    except RecordingError as e:
        assert_one_line(str(e))
        return None
    except Exception as e:
        raise AssertionError(f"{what}: Recording.open raised {type(e).__name__}: {e}") from e


@pytest.fixture(scope="module")
def meta_base(meta_dir) -> tuple[Path, dict]:
    orig = meta_dir / "zarr.json.orig"
    shutil.copy(meta_dir / "zarr.json", orig)
    return meta_dir, json.loads(orig.read_text())["attributes"][fmt.ATTRS_KEY]


@SETTINGS
@given(data=st.data())
def test_metadata_with_one_field_changed_opens_or_is_one_line(meta_base, data):
    path, meta = meta_base
    changed, what = mutate(meta, data)
    note(what)
    write_meta(path, changed)
    rec = open_or_one_line(path, what)
    for args in (["info", str(path)], ["info", "--json", str(path)]):  # and what `info` makes of it
        code, out, err = cli(*args)
        assert "Traceback" not in err, f"{what}: acc-capture {' '.join(args)} gave a traceback:\n{err}"
        if rec is None or code != 0:
            assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (what, code, err)
        else:
            assert not err and out, (what, err)


def cli(*args: str) -> tuple[int, str, str]:
    """`acc-capture ARGS` in this process: (exit code, stdout, stderr); an uncaught exception's traceback
    goes to stderr, with exit code 1, as it would from the shell."""
    from capture.cli import main

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["acc-capture", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@SETTINGS
@given(data=st.data())
def test_metadata_with_two_fields_changed_opens_or_is_one_line(meta_base, data):
    path, meta = meta_base
    once, first = mutate(meta, data)
    assume(paths(once))
    twice, second = mutate(once, data)
    note(f"{first}; {second}")
    write_meta(path, twice)
    open_or_one_line(path, f"{first}; {second}")


@SETTINGS
@given(meta=json_values)
def test_any_attributes_open_or_are_one_line(meta_base, meta):
    path, _ = meta_base
    write_meta(path, meta)
    open_or_one_line(path, f"acc_capture = {json.dumps(meta)[:200]}")


@SETTINGS
@given(fmt_version=st.sampled_from([1, 2]), condition=st.one_of(st.none(), st.sampled_from([*CONDITIONS, "nope"])),
       recipe=st.one_of(st.none(), st.sampled_from(["bcl", "own", ""])), seed=st.one_of(st.none(), st.integers(-3, 2**64)))
def test_the_format_2_fields_in_combination(meta_base, fmt_version, condition, recipe, seed):
    """format 1 and 2, condition null or not, a recipe or none, any seed."""
    path, meta = meta_base
    meta = {**meta, "format": fmt_version, "condition": condition, "recipe": recipe, "seed": seed}
    if fmt_version == 1:
        meta = {k: v for k, v in meta.items() if k not in ("key_table", "recipe", "vocabulary")}
    write_meta(path, meta)
    open_or_one_line(path, f"format {fmt_version}, condition {condition!r}, recipe {recipe!r}, seed {seed!r}")


@SETTINGS
@given(seed=numbers())
def test_check_seed_gives_the_seed_or_one_line(seed):
    try:
        assert check_seed(seed) == seed
    except ValueError as e:
        assert_one_line(str(e), "seed")
        assert not (_int(seed) and 0 <= seed <= 2**64 - 1), f"refused a seed torch takes: {e}"
        return
    assert _int(seed) and 0 <= seed <= 2**64 - 1
    import torch

    torch.Generator().manual_seed(seed)  # torch takes it


# -- what `view` makes of metadata with a field left out ---------------------------------------------------
# (a sweep of every field of the metadata, removed or replaced by null, 0, -1, 1.5, "", "x", [], {}, true,
# 2**64 or NaN, found `info`, `resume` and `diff` clean; the reader gives `view` every optional field)

OPTIONAL = ["condition", "recipe", "vocabulary", "seed", "versions", "resumed", "key_table.0.signed",
            "key_table.0.description", "policy.only", "created", "device", "note", "command",
            "policy.full_every", "policy.full_steps", "policy.large_float", "key_table.0.name"]


@pytest.mark.parametrize("field", OPTIONAL)
def test_view_without_an_optional_field_builds_or_is_one_line(meta_base, field):
    path, meta = meta_base
    meta = json.loads(json.dumps(meta))
    parent, *names = [meta, *field.split(".")]
    for name in names[:-1]:
        parent = parent[int(name)] if isinstance(parent, list) else parent[name]
    del parent[names[-1]]
    write_meta(path, meta)
    code, out, err = cli("view", "--build-only", str(path))
    assert "Traceback" not in err, f"removed {field}: acc-capture view gave a traceback:\n{err[-1500:]}"
    assert code == 0 or (code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")), (code, err)
