"""Command line: ``python -m derivs check package.module:function --shape 16 [--shape 3,4]``.

The target is ``package.module:function`` or ``path/to/file.py:function``. Builds random
inputs of the given shapes (one ``--shape`` per positional argument, drawn from a seeded
generator: standard normal, uniform on ``[--low, --high)``, or with ``--positive`` uniform on
``[0.5, 2)``), runs ``derivs.check`` and prints its report.

Exit status: 0 every comparison passed; 1 a mismatch (or a method that raised); 2 bad
usage (unknown option, bad shape, module, file or function not found, arguments
``derivs.check`` refuses); 3 the function (or its module) raised an exception of its own,
printed with its traceback; 4 unverified: nothing failed, but some derivative was checked
by no independent oracle (e.g. ``--oracles loop``, which shares the backward).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch

from derivs._check import ORACLES, CheckReport, check

PROG = "python -m derivs"
EXIT_PASS, EXIT_MISMATCH, EXIT_USAGE, EXIT_CRASH, EXIT_UNVERIFIED = 0, 1, 2, 3, 4
#: --positive draws uniformly from this interval: clear of 0 (log, sqrt, 1/x) and of overflow.
POSITIVE = (0.5, 2.0)
DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class _Usage(Exception):
    """A usage error: printed after the usage line, exit status 2."""


class _Crash(Exception):
    """The user's code raised: its traceback is printed, exit status 3."""


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog=PROG, description="derivs: trustworthy Jacobians, Hessians, hvp and vhp for PyTorch."
    )
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    p = sub.add_parser(
        "check",
        help="check every derivative of a function against every method and oracle",
        description="Check every derivative operator of a function (Jacobian; with --order 2 "
        "also Hessian, hvp/vhp, batch forms) by every method of derivs against independent "
        "oracles, at random inputs of the given shapes, and print the report. Exit status: "
        "0 pass, 1 mismatch, 2 bad usage, 3 the function raised, 4 unverified (no "
        "independent oracle checked some derivative).",
        epilog="examples: python -m derivs check examples.check_examples:predict_d16 --shape 16; "
        "python -m derivs check path/to/model.py:loss --shape 100000 --order 1 --mode projected",
    )
    p.add_argument(
        "target",
        metavar="module:function",
        help="the function to check: package.module:function (the current directory is "
        "importable) or path/to/file.py:function",
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="SHAPE",
        help="the shape of one positional argument: 16, 3,4 or 'scalar' for a 0-d "
        "tensor; give one --shape per argument, in order",
    )
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float64",
        help="dtype of the inputs (default: float64)",
    )
    p.add_argument("--device", default="cpu", help="device of the inputs (default: cpu)")
    p.add_argument(
        "--low", type=float, default=None, help="draw the inputs uniformly from [LOW, HIGH)"
    )
    p.add_argument("--high", type=float, default=None, help="see --low")
    p.add_argument(
        "--positive",
        action="store_true",
        help=f"draw the inputs uniformly from [{POSITIVE[0]}, {POSITIVE[1]}) (for log, sqrt, "
        "1/x; default: standard normal)",
    )
    p.add_argument(
        "--mode",
        choices=("auto", "dense", "projected"),
        default="auto",
        help="dense: full Jacobians and Hessians; projected: products along random directions "
        "(large inputs); auto: projected past 512 differentiated elements (default: auto)",
    )
    p.add_argument(
        "--order",
        type=int,
        choices=(1, 2),
        default=2,
        help="1: Jacobians; 2: also Hessians, hvp/vhp (default: 2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    p.add_argument(
        "--argnums",
        default="0",
        metavar="I[,J...]",
        help="which arguments to differentiate (default: 0)",
    )
    p.add_argument(
        "--batched",
        default=None,
        metavar="IN_DIMS",
        help="check the batch forms too: the in_dims of the arguments as in "
        "torch.vmap, e.g. 0 or none,none,0 (the function is per-sample)",
    )
    p.add_argument(
        "--methods",
        default="all",
        help="comma-separated method names, or operator:method (default: all)",
    )
    p.add_argument(
        "--oracles",
        default=",".join(ORACLES),
        help=f"comma-separated, from {', '.join(ORACLES)} (default: all)",
    )
    p.add_argument("--rtol", type=float, default=None, help="replace the derived rtol")
    p.add_argument("--atol", type=float, default=None, help="replace the derived atol")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser, p


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise _Usage(f"{what} {text!r} is not a comma-separated list of integers") from None


def _shape(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "scalar", "()"):
        return ()
    dims = _ints(text.strip().strip("()"), "--shape")
    if not dims or any(d < 0 for d in dims):
        raise _Usage(f"--shape {text!r} must be non-negative sizes like 16 or 3,4 (or 'scalar')")
    return dims


def _in_dims(text: str) -> int | tuple[int | None, ...]:
    parts = [p.strip().lower() for p in text.split(",")]
    try:
        dims = tuple(None if p == "none" else int(p) for p in parts)
    except ValueError:
        raise _Usage(
            f"--batched {text!r} must be an int or a comma-separated list of "
            "ints and 'none', e.g. 0 or none,none,0"
        ) from None
    return dims[0] if len(dims) == 1 and dims[0] is not None else dims


def _load(target: str) -> Callable[..., Any]:
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise _Usage(
            f"{target!r} is not of the form package.module:function or path/to/file.py:function"
        )
    # NOTE: `python -m` puts the current directory on sys.path; an installed entry point
    # would not, so add it for both.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    is_file = where.endswith(".py") or os.sep in where or "/" in where
    module = _load_file(where) if is_file else _import(where)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _Usage(f"{where!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise _Usage(f"{target!r} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise _Usage(
                f"cannot import {module_name!r}: {exc} (run from the directory that "
                "contains it, or add it to PYTHONPATH, or give path/to/file.py)"
            ) from None
        raise _Crash(f"importing {module_name!r} raised") from exc
    except Exception as exc:
        raise _Crash(f"importing {module_name!r} raised") from exc


def _load_file(path: str) -> ModuleType:
    """Run a Python file as a module named after it; its directory goes on ``sys.path`` first,
    so that it imports its neighbours as it would when run as a script."""
    if not os.path.isfile(path):
        raise _Usage(f"{path!r} is not a file (give path/to/file.py:function)")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _Usage(f"{path!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.modules[name] = module  # NOTE: dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise _Crash(f"running {path!r} raised") from exc
    return module


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise _Usage(
            f"--device {text!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)"
        ) from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise _Usage(f"--device {text!r} is not available here ({exc})") from None
    return device


def _domain(ns: argparse.Namespace) -> tuple[float, float] | None:
    """The inputs' interval (None: standard normal), from --low/--high or --positive."""
    if ns.positive:
        if ns.low is not None or ns.high is not None:
            raise _Usage("give --positive or --low/--high, not both")
        return POSITIVE
    if ns.low is None and ns.high is None:
        return None
    if ns.low is None or ns.high is None:
        raise _Usage(
            "--low and --high go together: give both (the inputs are uniform on [LOW, HIGH))"
        )
    if not (math.isfinite(ns.low) and math.isfinite(ns.high) and ns.low < ns.high):
        raise _Usage(f"--low {ns.low} --high {ns.high}: need finite LOW < HIGH")
    return ns.low, ns.high


def _draw(
    shape: tuple[int, ...], gen: torch.Generator, low_high: tuple[float, float] | None
) -> torch.Tensor:
    """Standard normal, or uniform on ``[low, high)``, in float64 (cast afterwards)."""
    if low_high is None:
        return torch.randn(shape, generator=gen, dtype=torch.float64)
    low, high = low_high
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _run_check(ns: argparse.Namespace) -> CheckReport:
    if not ns.shape:
        raise _Usage("give one --shape per positional argument of the function, e.g. --shape 16")
    shapes = [_shape(s) for s in ns.shape]
    argnums_t = _ints(ns.argnums, "--argnums")
    if not argnums_t:
        raise _Usage("--argnums is empty; give e.g. 0 or 0,2")
    argnums: int | tuple[int, ...] = argnums_t[0] if len(argnums_t) == 1 else argnums_t
    batched = None if ns.batched is None else _in_dims(ns.batched)
    methods = [m.strip() for m in ns.methods.split(",") if m.strip()]
    oracles = [o.strip() for o in ns.oracles.split(",") if o.strip()]
    device = _device(ns.device)
    func = _load(ns.target)
    low_high = _domain(ns)
    gen = torch.Generator().manual_seed(ns.seed)
    args = [_draw(s, gen, low_high).to(DTYPES[ns.dtype]).to(device) for s in shapes]
    try:
        return check(
            func,
            *args,
            argnums=argnums,
            order=ns.order,
            methods=methods,
            oracles=oracles,
            batched=batched,
            rtol=ns.rtol,
            atol=ns.atol,
            raise_exception=False,
            mode=ns.mode,
        )
    except (TypeError, ValueError) as exc:
        if str(exc).startswith("derivs.check"):
            raise _Usage(str(exc)) from None
        raise _Crash(f"{ns.target} raised") from exc
    except Exception as exc:
        raise _Crash(f"{ns.target} raised") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser, sub = _parser()
    ns = parser.parse_args(argv)  # exits with status 2 on bad usage
    # NOTE: torch.func's first call runs a torch.jit.script'ed helper inside torch itself;
    # torch 2.14 warns about it (FutureWarning) on every run: torch's, not the user's.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    try:
        report = _run_check(ns)
    except _Usage as exc:
        sub.print_usage(sys.stderr)
        print(f"{PROG} {ns.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Crash as exc:
        cause = exc.__cause__
        assert cause is not None
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        print(f"{PROG} {ns.command}: {exc} (exit status {EXIT_CRASH})", file=sys.stderr)
        return EXIT_CRASH
    print(json.dumps(report.to_dict(), indent=2) if ns.json else report)
    return _status(report)


def _status(report: CheckReport) -> int:
    """The exit status of ``report.status``: failed, unverified (nothing failed, but no
    independent oracle confirmed some derivative) or passed."""
    return {"failed": EXIT_MISMATCH, "unverified": EXIT_UNVERIFIED}.get(report.status, EXIT_PASS)


if __name__ == "__main__":
    sys.exit(main())
