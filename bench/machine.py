"""The facts every measurement records about the machine and its run."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's with its core count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()}, {os.cpu_count()} cores"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``"a, b, c"``."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def run_facts(args: argparse.Namespace, load: str) -> dict[str, Any]:
    """What every measurement tool records about its run: torch, device, machine load, clock."""
    return {
        "torch": torch.__version__,
        "device": args.device,
        "device_name": device_name(args.device),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load": load,
        "rounds": args.rounds,
        "clock": args.clock,
    }


def run_conditions(result: dict[str, Any]) -> str:
    """The facts of :func:`run_facts` as a results page opens with them: ``torch 2.13.0 on
    <device> (2 threads), <date>, load average at start <1, 5, 15 min>, wall clock``."""
    threads = f"{result['threads']} thread" + ("" if result["threads"] == 1 else "s")
    return (
        f"torch {result['torch']} on {result['device_name']} ({threads}), "
        f"{result['date']}, load average at start {result['load']}, "
        f"{result.get('clock', 'wall')} clock"
    )


def machine_info() -> dict[str, Any]:
    """What a pytest-benchmark run adds to its ``machine_info``."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu_model": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return info
