"""MNIST, shipped with the package, loaded the torchvision way, streamed in seeded batches."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from importlib import resources
from pathlib import Path

import torch
from torchvision.datasets import MNIST

# md5 of the decompressed IDX files, as torchvision's MNIST.resources lists them for the .gz.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class DataError(Exception):
    """The MNIST files are missing or do not match their checksums."""


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_root() -> Path:
    """Where the shipped .gz files are unpacked once: `$ACC_CACHE` or `~/.cache/acc-capture`."""
    return Path(os.environ.get("ACC_CACHE", Path.home() / ".cache" / "acc-capture")) / "mnist"


def prepare_root(root: Path | None = None) -> Path:
    """Return a root with `MNIST/raw/<file>` verified, unpacking the shipped data if `root` is None."""
    if root is None:
        root = default_root()
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        shipped = resources.files("acc") / "mnist"
        for name in MD5:
            target = raw / name
            if not target.exists() or _md5(target) != MD5[name]:
                tmp = target.with_suffix(f".tmp{os.getpid()}")
                with resources.as_file(shipped / f"{name}.gz") as gz, gzip.open(gz) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, target)
    root = Path(root)
    raw = root / "MNIST" / "raw"
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        path = raw / name
        if not path.is_file():
            raise DataError(f"MNIST file not found: {path} (--data-root must hold MNIST/raw/{name})")
        if _md5(path) != MD5[name]:
            raise DataError(f"MNIST file has the wrong md5: {path}")
    return root


def load_mnist(root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 60,000 training images as uint8 [N,28,28] and their labels as int64 [N]."""
    ds = MNIST(str(prepare_root(root)), train=True, download=False)
    return ds.data, ds.targets


class BatchStream:
    """Endless seeded batches, reshuffled each epoch; the position persists across `train()` calls.

    Pixels are in [0,1] exactly as `ToTensor` gives them (uint8 / 255). The last partial batch of an
    epoch is dropped so every step sees `batch_size` images.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, device: str = "cpu"):
        if not 1 <= batch_size <= len(images):
            raise ValueError(f"batch_size must be from 1 to the {len(images)} images, not {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.device = batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.per_epoch = len(images) // batch_size
        self.epoch, self.index = 0, 0
        self._order = torch.randperm(len(self.images), generator=self.generator)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "order": self._order.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = state["order"].clone()
        self.generator.set_state(state["generator"])

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.index == self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
            self._order = torch.randperm(len(self.images), generator=self.generator)
        idx = self._order[self.index * self.batch_size : (self.index + 1) * self.batch_size]
        self.index += 1
        x = self.images[idx].unsqueeze(1).to(torch.float32).div(255)
        return x.to(self.device), self.labels[idx].to(self.device)
