"""Shared fixtures: real recordings made once per session by the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from capture.cli import main; main()"]


def acc(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `acc-capture ARGS` in a subprocess; returns the completed process (text output)."""
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120"})
    if check and proc.returncode != 0:
        raise AssertionError(f"acc-capture {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def recordings(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recordings")


@pytest.fixture(scope="session")
def bcl_rec(recordings) -> Path:
    """A 30-step bcl-slow recording (seed 0, every key, every step), chunked 7 steps at a time."""
    path = recordings / "bcl"
    acc("run", "--steps", "30", "--out", str(path), "--chunk-steps", "7", "--note", "fixture")
    return path


@pytest.fixture(scope="session")
def control_rec(recordings) -> Path:
    path = recordings / "control"
    acc("run", "--steps", "12", "--condition", "control", "--out", str(path))
    return path


@pytest.fixture(scope="session")
def sparse_rec(recordings) -> Path:
    """bcl-slow, 20 steps, full tensors every 5th step only."""
    path = recordings / "sparse"
    acc("run", "--steps", "20", "--full-every", "5", "--out", str(path))
    return path
