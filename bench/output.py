"""How the benchmarks write numbers: times, ratios, sizes, and the ``.json``/``.md`` pair."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def fmt_time(seconds: float | None) -> str:
    """Three significant digits in s, ms, µs or ns; ``-`` for none or not finite."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 0:
        return "-" + fmt_time(-seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if math.isfinite(r) else "-"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def write_outputs(result: dict[str, Any], text: str, out: str, *, json_too: bool = True) -> None:
    """``out.json`` (the measurements) and ``out.md`` (the rendered tables); print the tables."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if json_too:
        path.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    path.with_suffix(".md").write_text(text)
    print(text)
