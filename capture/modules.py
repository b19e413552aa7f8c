"""Capture a model's layers without writing hooks: `watch(model, names)` and `merge(*vocabularies)`.

    import capture
    from capture import TensorKey, record

    class Keys(TensorKey):                          # what the loop captures by hand
        LOSS = "loss", (), "scalar"

    layers = capture.watch(model, "fc*", extra=Keys)  # every module named fc...
    with record("recordings/mlp", layers.keys) as rec, layers.attach(rec):
        for step in range(1000):
            loss = F.cross_entropy(model(x), y)     # forward hooks capture fc1_output, fc2_output
            opt.zero_grad()
            loss.backward()
            layers.capture()                        # fc1_weight, fc1_bias, fc1_weight_grad, ...
            rec.inspector.capture(Keys.LOSS, loss)
            rec.commit()
            opt.step()

For each watched module the vocabulary has a key for its output (`<module>_output`), one for each of
its own parameters (`<module>_weight`, `<module>_bias`, ...) and one for each one's gradient
(`<module>_weight_grad`, ...). Names come from the module names (`encoder.0` -> `encoder_0`).
Dimensions are named per module, so two modules never claim one name with two sizes: a Linear's
weight is (`fc1_out`, `fc1_in`) and its output (`batch`, `fc1_out`); a Conv2d's weight is
(`conv_out`, `conv_in`, `conv_kh`, `conv_kw`) and its output (`batch`, `conv_out`, `conv_h`, `conv_w`);
anything else gets generic names per key (`ln_weight_d0`, ...).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable, Iterable

import torch
from torch import nn

from acc.step_inspector import CaptureError, StepInspector, TensorKey

__all__ = ["Watch", "merge", "watch"]

Names = str | re.Pattern | Iterable[str] | Callable[[str], bool]


def merge(*vocabularies: type[TensorKey], name: str = "ModelKeys") -> type[TensorKey]:
    """One vocabulary holding the keys of all of `vocabularies`, in order (a recording has one).

    A key of one of them is accepted wherever the merged one is used: `rec.inspector.capture(Keys.LOSS, x)`
    works in a recording of `merge(Keys, Other)`. The merged enum lists them in `merged_from`, and its
    `summaries()` and `derived()` are all of theirs. Raises ValueError if two of them name the same key.
    """
    members: dict[str, tuple] = {}
    seen: dict[str, str] = {}  # each key's value, and its member name after a ".", -> the key that has it
    for vocabulary in vocabularies:
        if not (isinstance(vocabulary, type) and issubclass(vocabulary, TensorKey)):
            raise ValueError(f"merge(): {vocabulary!r} is not a TensorKey enum")
        for key in vocabulary:
            here = f"{vocabulary.__name__}.{key.name}"
            if other := seen.get(key.value) or seen.get(f".{key.name}"):
                raise ValueError(f"merge(): {here} and {other} have the same name")
            seen[key.value] = seen[f".{key.name}"] = here
            members[key.name] = (key.value, key.dims, key.render, key.signed, key.description)
    merged = TensorKey(name, members)
    merged.merged_from = tuple(vocabularies)
    merged.summaries = classmethod(lambda cls: {n: s for v in vocabularies for n, s in v.summaries().items()})
    merged.derived = classmethod(lambda cls: {k: d for v in vocabularies for k, d in v.derived().items()})
    return merged


def _matcher(names: Names) -> Callable[[str], bool]:
    """A module-name predicate: a glob string (`fc*`, `encoder.*.attn`), a compiled regex (whole name),
    a list of exact names, or a callable on the name."""
    if isinstance(names, str):
        return lambda n: fnmatch.fnmatchcase(n, names)
    if isinstance(names, re.Pattern):
        return lambda n: names.fullmatch(n) is not None
    if callable(names):
        return names
    wanted = set(names)
    return wanted.__contains__


def _identifier(name: str) -> str:
    """A module name as a key prefix: `encoder.0` -> `encoder_0`, `0` (in a Sequential) -> `layer0`."""
    text = re.sub(r"\W", "_", name)
    return f"layer{text}" if text[:1].isdigit() else text


def _render(rank: int, parameter: bool) -> str:
    """Scalars as numbers, vectors as bars, 2-D parameters as weights (rows as images when square),
    other 2-D tensors as heatmaps, [n, h, w] and [n, c, h, w] as a batch of images."""
    return {0: "scalar", 1: "bars", 2: "weights" if parameter else "heatmap", 3: "images", 4: "images"}.get(rank, "heatmap")


_KERNEL = {1: ("k",), 2: ("kh", "kw"), 3: ("kd", "kh", "kw")}
_SPACE = {1: ("len",), 2: ("h", "w"), 3: ("d", "h", "w")}


def _param_dims(module: nn.Module, prefix: str, pname: str, key: str, rank: int) -> tuple[str, ...]:
    if isinstance(module, nn.Linear) and pname in ("weight", "bias"):
        return (f"{prefix}_out", f"{prefix}_in")[:rank]
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and pname in ("weight", "bias"):
        n = len(module.kernel_size)
        return tuple(f"{prefix}_{d}" for d in ("out", "in", *_KERNEL[n]))[:rank]
    if isinstance(module, nn.Embedding) and pname == "weight":
        return f"{prefix}_token", f"{prefix}_dim"
    return tuple(f"{key}_d{i}" for i in range(rank))


def _output_dims(module: nn.Module, prefix: str, key: str, rank: int | None, batch: str) -> tuple[str, ...] | None:
    """Dimension names of `module`'s output of `rank` dims (None: unknown, from the module's type alone)."""
    known = None
    if isinstance(module, nn.Linear):
        known = (batch, f"{prefix}_out")
    elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        known = (batch, f"{prefix}_out", *(f"{prefix}_{d}" for d in _SPACE[len(module.kernel_size)]))
    if known is not None and rank in (None, len(known)):
        return known
    if rank is None:
        return None
    return () if rank == 0 else (batch, *(f"{key}_d{i}" for i in range(1, rank)))


def _example_outputs(model: nn.Module, modules: dict[str, nn.Module], example) -> dict[str, torch.Tensor]:
    """The outputs of `modules` in one forward pass of `example` (in eval mode, without gradients)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n, m in modules.items()]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(example, tuple):
                model(*example)
            else:
                model(example)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return {n: o for n, o in seen.items() if isinstance(o, torch.Tensor)}


class Watch:
    """The watched modules of a model and their vocabulary (`keys`); made by `watch()`.

    `attach(rec)` puts forward hooks on the modules that capture their outputs into the recording's
    inspector (the last call of a step is kept); `capture()` captures their parameters and gradients
    (call it after `backward()`, before the optimizer step, so the weights are those the forward
    pass used). `detach()`, or leaving `with watch.attach(rec):`, removes the hooks.
    """

    def __init__(self, keys: type[TensorKey], outputs: dict[str, tuple[nn.Module, str]],
                 params: list[tuple[str, nn.Parameter, str | None, str | None]]):
        self.keys = keys
        self._outputs = outputs  # module name -> (module, key)
        self._params = params  # (parameter name, parameter, its key, its gradient's key)
        self._inspector: StepInspector | None = None
        self._handles: list = []

    @property
    def watched(self) -> list[str]:
        """The keys this watch captures (a `keys` made with `extra=` has those too)."""
        return [k for _, k in self._outputs.values()] + [k for _, _, *ks in self._params for k in ks if k]

    def attach(self, target) -> Watch:
        """Capture into `target` (a RecordingSession, or a StepInspector) from now on; returns self."""
        inspector = getattr(target, "inspector", target)
        if not isinstance(inspector, StepInspector):
            raise ValueError(f"attach(): expected a RecordingSession or a StepInspector, not {type(target).__name__}")
        for key in self.watched:
            inspector.key(key)  # (raises CaptureError if the recording's vocabulary lacks it)
        self.detach()
        self._inspector = inspector
        self._handles = [module.register_forward_hook(lambda m, i, out, k=key: inspector.capture(k, out))
                         for module, key in self._outputs.values()]
        return self

    def capture(self) -> None:
        """Capture the watched parameters and their gradients into the attached recording."""
        if self._inspector is None:
            raise CaptureError("capture(): attach the watch to a recording first (watch.attach(rec))")
        for name, param, key, grad_key in self._params:
            if key:
                self._inspector.capture(key, param)
            if grad_key:
                if param.grad is None:
                    raise CaptureError(f"capture({grad_key}): {name} has no gradient; call capture() after backward()")
                self._inspector.capture(grad_key, param.grad)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._inspector = [], None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def watch(model: nn.Module, names: Names, *, extra: type[TensorKey] | None = None, example=None,
          batch_dim: str = "batch", outputs: bool = True, params: bool = True, grads: bool = True,
          name: str = "ModelKeys") -> Watch:
    """Watch the modules of `model` whose names match `names`; `.keys` is the vocabulary to record with.

    - `names`: a glob (`"fc*"`, `"encoder.*.attn"`; `*` crosses dots), a compiled regex matched
      against the whole name, a list of exact names, or a callable on the name (like TransformerLens's
      `names_filter`). The model itself (name "") is never watched.
    - `extra`: your own vocabulary, merged in (`merge(extra, watched)`), so one recording holds both.
    - `example`: an input batch (or a tuple of inputs) to run once, in eval mode without gradients,
      to learn how many dimensions each output has. Needed for outputs of modules other than Linear
      and Conv1d/2d/3d; without it, watching such a module's output raises ValueError.
    - `batch_dim`: the name of the outputs' first dimension; `outputs`, `params`, `grads`: what to capture.
    Parameters are a module's own (not its children's); those that do not require grad get no gradient key.

        layers = watch(model, "fc*", extra=Keys, batch_dim="image")
        layers.keys.FC1_WEIGHT.dims     # ("fc1_out", "fc1_in")
    """
    if not isinstance(names, (str, re.Pattern)) and not callable(names):
        names = list(names)
        if missing := sorted(set(names) - {n for n, _ in model.named_modules()}):
            raise ValueError(f"watch(): the model has no module named {', '.join(map(repr, missing))}")
    match = _matcher(names)
    modules = {n: m for n, m in model.named_modules() if n and match(n)}
    if not modules:
        named = ", ".join(n for n, _ in model.named_modules() if n) or "none"
        raise ValueError(f"watch(): no module of the model matches {names!r} (its modules: {named})")
    shapes = _example_outputs(model, modules, example) if example is not None and outputs else None
    members: dict[str, tuple] = {}
    owner: dict[str, str] = {}  # dimension name -> the module that named it
    prefixes: set[str] = set()
    out_keys: dict[str, tuple[nn.Module, str]] = {}
    param_keys: list[tuple[str, nn.Parameter, str | None, str | None]] = []

    def add(value: str, dims: tuple[str, ...], render: str, description: str, module: str) -> str:
        for d in dims:
            if d != batch_dim and owner.setdefault(d, module) != module:
                raise ValueError(f"watch(): modules {owner[d]} and {module} both name a dimension {d!r}")
        if value.upper() in members:
            raise ValueError(f"watch(): two keys would be named {value!r}; watch fewer modules")
        members[value.upper()] = (value, dims, render, True, description)
        return value

    for mod_name, module in modules.items():
        kind = type(module).__name__
        prefix = base = _identifier(mod_name)
        n = 2
        while prefix.upper() in prefixes:  # (`a.b` and `a_b` both make a_b)
            prefix, n = f"{base}_{n}", n + 1
        prefixes.add(prefix.upper())
        if outputs and (shapes is None or mod_name in shapes):
            key = f"{prefix}_output"
            rank = None if shapes is None else shapes[mod_name].dim()
            dims = _output_dims(module, prefix, key, rank, batch_dim)
            if dims is None:
                raise ValueError(f"watch(): cannot tell how many dimensions the output of {mod_name} ({kind}) has; "
                                 "pass example=<an input batch> or outputs=False")
            out_keys[mod_name] = (module, add(key, dims, _render(len(dims), False), f"output of {mod_name} ({kind})", mod_name))
        for pname, param in module.named_parameters(recurse=False) if params or grads else ():
            key = f"{prefix}_{_identifier(pname)}"
            dims = _param_dims(module, prefix, pname, key, param.dim())
            render = _render(param.dim(), True)
            value = add(key, dims, render, f"{mod_name}.{pname} ({kind})", mod_name) if params else None
            grad = (add(f"{key}_grad", dims, render, f"gradient of {mod_name}.{pname}", mod_name)
                    if grads and param.requires_grad else None)
            if value or grad:
                param_keys.append((f"{mod_name}.{pname}", param, value, grad))
    if not members:
        raise ValueError(f"watch(): nothing to capture in {', '.join(modules)} (no output, parameter or gradient)")
    watched = TensorKey(f"{name}Watched" if extra is not None else name, members)
    return Watch(merge(extra, watched, name=name) if extra is not None else watched, out_keys, param_keys)
