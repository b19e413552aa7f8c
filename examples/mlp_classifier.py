"""An MLP classifier on MNIST, every step recorded through acc-capture's public API.

    python examples/mlp_classifier.py --steps 300
    acc-capture view recordings/mlp

Two ways to name what is recorded: keys declared by hand (`Keys`, captured with
`rec.inspector.capture`), and the layers' outputs, weights, biases and gradients, found by name
(`capture.watch(model, "fc*")`).
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import capture
from acc.data import BatchStream, load_mnist
from capture import TensorKey, record

BATCH, HIDDEN, LR = 64, 128, 0.1


class Keys(TensorKey):  # value, dimension names, how the viewer draws it, signed, description
    IMAGES = "images", ("image", "channel", "height", "width"), "images", False, "the batch"
    LABELS = "labels", ("image",), "labels", False, "the batch's digits"
    LOGITS = "logits", ("image", "class"), "heatmap", True, "the model's output"
    SOFTMAX = "softmax", ("image", "class"), "heatmap", False, "class probabilities"
    LOSS = "loss", (), "scalar", False, "mean cross-entropy of the batch"
    ACCURACY = "accuracy", (), "scalar", False, "fraction of the batch classified right"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train an MLP on MNIST and record every step.")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--out", default="recordings/mlp", help="recording directory (default recordings/mlp)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches (default 0)")
    parser.add_argument("--force", action="store_true", help="replace a recording already at --out")
    args = parser.parse_args(argv)
    if args.steps < 1:
        return fail(f"--steps must be at least 1, not {args.steps}")

    torch.manual_seed(args.seed)
    model = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(28 * 28, HIDDEN), relu=nn.ReLU(),
                                      fc2=nn.Linear(HIDDEN, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    # fc1 and fc2: their outputs (fc1's: the hidden layer before its ReLU; fc2's: the logits again),
    # weights, biases, and the gradients of both
    layers = capture.watch(model, "fc*", extra=Keys, batch_dim="image")
    config = {"model": "784-128-10 MLP, ReLU", "batch_size": BATCH, "optimizer": "SGD", "lr": LR}
    try:
        rec = record(args.out, layers.keys, config=config, seed=args.seed, force=args.force,
                     note=f"examples/mlp_classifier.py --steps {args.steps}")
    except (ValueError, OSError) as e:
        return fail(str(e))
    batches = BatchStream(*load_mnist(), batch_size=BATCH, seed=args.seed)

    with rec, layers.attach(rec):
        for _ in range(args.steps):
            images, labels = batches.next()
            logits = model(images)  # (the hooks capture fc1's and fc2's outputs)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            layers.capture()  # the weights the forward pass used, and their gradients
            for key, value in [(Keys.IMAGES, images), (Keys.LABELS, labels), (Keys.LOGITS, logits),
                               (Keys.SOFTMAX, logits.softmax(1)), (Keys.LOSS, loss),
                               (Keys.ACCURACY, (logits.argmax(1) == labels).float().mean())]:
                rec.inspector.capture(key, value)
            rec.commit()
            opt.step()
    print(f"recorded {rec.steps_completed} steps to {args.out}")
    print(f"view it: acc-capture view {args.out}")
    return 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
