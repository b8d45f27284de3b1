"""The devices the suite runs on: every device present, or those named with ``--devices``."""

from __future__ import annotations

import pytest


def available_devices() -> list[str]:
    """Every device torch can use here, cpu first (imports torch)."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def parse_devices(raw: str | None) -> list[str]:
    """``--devices cpu,cuda`` checked against the devices present (all of them when None).

    Raises:
        pytest.UsageError: a device that is not available, or an empty list.
    """
    present = available_devices()
    devices = present if raw is None else [d.strip() for d in raw.split(",") if d.strip()]
    for d in devices:
        if d not in present:
            raise pytest.UsageError(f"--devices: {d!r} is not available here (present: {present})")
    if not devices:
        raise pytest.UsageError("--devices: give at least one device")
    return devices
