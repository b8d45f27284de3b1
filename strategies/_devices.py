"""The devices the suite runs on, set once by the pytest_derivs plugin from ``--devices``."""

from __future__ import annotations

_DEVICES: list[str] = ["cpu"]


def set_devices(devices: list[str]) -> None:
    """Record the devices chosen with ``--devices`` (called by the pytest_derivs plugin)."""
    if not devices:
        raise ValueError("set_devices: give at least one device")
    _DEVICES[:] = list(devices)


def get_devices() -> list[str]:
    """The devices every property runs on (cpu unless ``--devices`` said otherwise)."""
    return list(_DEVICES)
