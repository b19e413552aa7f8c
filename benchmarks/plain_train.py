"""Plain training, the baseline of the recording benchmark: BCL attached, no inspector, nothing written."""

import sys

from acc.conditions import make_config
from acc.recipe import build_run

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
run = build_run(make_config("bcl-slow"), seed=0, device="cpu")
run.trainer.train(steps)
print(f"trained {steps} steps, loss {run.trainer.loss.item():.4f}")
