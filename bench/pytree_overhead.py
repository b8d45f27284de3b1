"""Plain tensors before and after pytrees (issue 26): the derivs calls of the benchmark groups
(``tests/bench``), timed against the same calls of derivs as it was before
``derivs/_pytree.py`` landed, in one process, interleaved.

The earlier derivs is imported from a worktree of that commit (``--before``) by
:func:`load_package`: its modules leave ``sys.modules`` again once loaded, so ``import derivs``
keeps meaning the repository's and the earlier functions keep the modules they were bound to.
``--after`` does the same for another checkout (by default the derivs that ``import derivs``
finds: the working tree). Each case times three entries in interleaved blocks
(``bench.timing.time_interleaved``): ``before``, ``after`` and ``before`` again, a second
closure of the same call whose ratio to the first is the case's noise floor (an A/A
comparison); ``--trials`` repeats the three, for the spread. Each version's result is
checked against the closed form before anything is timed, and the two versions' results
are compared bit for bit.

    git worktree add /tmp/pre_pytree "$(git log --format=%H --diff-filter=A -- derivs/_pytree.py)^"
    python -m bench.pytree_overhead --before /tmp/pre_pytree --threads 1 --clock thread
    git worktree remove /tmp/pre_pytree

The groups and their derivs methods are those of ``tests/bench`` (the problems from
``bench.problems``), except the Hessian group's ``rev_rev`` and ``rev_fwd`` (2 and 5 s a call
at 512 -> 32, where a fixed cost per call cannot show) and the crossover sweep (the tall and
wide groups' calls at other shapes). Writes ``docs/bench/pytree_overhead.{json,md}``.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils._pytree import tree_leaves

import derivs
from bench.machine import load_average, run_conditions, run_facts
from bench.output import fmt_ratio, fmt_time, write_outputs
from bench.problems import (
    predict,
    predict_hessian,
    predict_hvp,
    predict_inputs,
    predict_jacobian,
    sin_sum,
    sin_sum_products,
    vector_inputs,
)
from bench.timing import CLOCKS, parse_timing, sync, time_interleaved, timing_parser

# The timed entries and the version each calls: "before again" is the A/A control.
ENTRIES = {"before": "before", "after": "after", "before again": "before"}
# A derivs call of a group: the derivs module -> a function of the group's inputs.
Call = Callable[[types.ModuleType], Callable[..., Any]]


class Group(NamedTuple):
    """A benchmark group of ``tests/bench``: its inputs, closed form and derivs calls."""

    name: str
    inputs: Callable[[str], tuple[torch.Tensor, ...]]
    expected: Callable[..., Any]
    calls: dict[str, Call]


def load_package(root: str | Path, name: str = "derivs") -> types.ModuleType:
    """The package ``name`` as found under ``root``, imported apart from the one in use.

    The modules of ``name`` already imported are set aside while ``root``'s are imported, then
    put back; the returned package's modules hold their own references to one another.
    """
    root = Path(root).resolve()
    if not (root / name / "__init__.py").is_file():
        raise ValueError(f"load_package: root {str(root)!r} has no {name}/__init__.py")
    mine = [k for k in sys.modules if k == name or k.startswith(name + ".")]
    saved = {k: sys.modules.pop(k) for k in mine}
    sys.path.insert(0, str(root))
    try:
        package = importlib.import_module(name)
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]
        sys.modules.update(saved)
    if not str(package.__file__).startswith(str(root)):
        raise ValueError(f"load_package: {name} came from {package.__file__}, not from {root}")
    return package


def _jacobian(method: str) -> Call:
    return lambda d: d.jacobian(predict, argnums=2, method=method)


def _hessian(method: str) -> Call:
    return lambda d: d.hessian(predict, argnums=2, method=method)


def _batch(operator: str, method: str) -> Call:
    return lambda d: getattr(d, operator)(
        predict, argnums=2, in_dims=(None, None, 0), method=method
    )


def _product(operator: str, method: str) -> Call:
    return lambda d: lambda x, v: getattr(d, operator)(sin_sum, (x,), (v,), method=method)


def _predict_hvp(d: types.ModuleType) -> Callable[..., Any]:
    """``tests/bench``'s overhead hvp: ``H v`` of ``predict(W, b, x).sum()`` at ``v = x``."""

    def call(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> Any:
        return d.hvp(lambda x: predict(weight, bias, x).sum(), (x,), (x,), method="fwd_rev")

    return call


def _predict_hvp_expected(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> Any:
    return (predict_hvp(weight, bias, x, x),)


def _products(n: int, dense: bool) -> Group:
    calls = {
        f"{op} {m}": _product(op, m)
        for op, m in (
            ("hvp", "auto"),
            ("vhp", "auto"),
            ("hvp", "fwd_rev"),
            ("hvp", "rev_rev"),
            ("vhp", "rev_rev"),
        )
    }
    if dense:
        calls |= {f"{op} dense": _product(op, "dense") for op in ("hvp", "vhp")}
    return Group(
        f"hvp/vhp N={n if dense else '10**6'}",
        lambda device: vector_inputs(n, device),
        sin_sum_products,
        calls,
    )


def groups() -> list[Group]:
    """The plain-tensor groups of ``tests/bench``, with their derivs calls."""
    jac = {m: _jacobian(m) for m in ("fwd", "rev", "auto")}
    return [
        Group(
            "jacobian square D=16",
            lambda device: predict_inputs(16, 16, device),
            predict_jacobian,
            {m: _jacobian(m) for m in ("loop", "vjp_vmap", "rev", "fwd", "auto")},
        ),
        Group(
            "jacobian tall 32->2048",
            lambda device: predict_inputs(32, 2048, device),
            predict_jacobian,
            jac,
        ),
        Group(
            "jacobian wide 2048->32",
            lambda device: predict_inputs(2048, 32, device),
            predict_jacobian,
            jac,
        ),
        Group(
            "hessian 512->32",
            lambda device: predict_inputs(512, 32, device),
            predict_hessian,
            {m: _hessian(m) for m in ("fwd_rev", "fwd_fwd", "auto")},
        ),
        _products(2048, dense=True),
        _products(10**6, dense=False),
        Group(
            "batch jacobian B=64 31->33",
            lambda device: predict_inputs(31, 33, device, batch=64),
            predict_jacobian,
            {m: _batch("batch_jacobian", m) for m in ("vmap", "sum", "loop")},
        ),
        Group(
            "batch hessian B=64 31->33",
            lambda device: predict_inputs(31, 33, device, batch=64),
            predict_hessian,
            {m: _batch("batch_hessian", m) for m in ("vmap", "sum", "loop")},
        ),
        Group(
            "overhead D=4",
            lambda device: predict_inputs(4, 4, device),
            predict_jacobian,
            {
                "jacobian rev": _jacobian("rev"),
                "jacobian fwd": _jacobian("fwd"),
                "jacobian auto": _jacobian("auto"),
                "hessian fwd_rev": _hessian("fwd_rev"),
                "hvp fwd_rev": _predict_hvp,
            },
        ),
    ]


def _expected(group: Group, label: str) -> Callable[..., Any]:
    """The closed form of one call (the overhead group mixes a Jacobian, a Hessian, an hvp)."""
    if group.name.startswith("overhead"):
        if label.startswith("hessian"):
            return predict_hessian
        if label.startswith("hvp"):
            return _predict_hvp_expected
    return group.expected


def _bitwise_equal(a: Any, b: Any) -> bool:
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))


def measure_case(
    group: Group,
    label: str,
    versions: dict[str, types.ModuleType],
    device: str,
    *,
    trials: int,
    **timing: Any,
) -> dict[str, Any]:
    """One derivs call of ``group`` in each version: checked, compared, then timed."""
    args = group.inputs(device)
    expected = _expected(group, label)(*args)
    fns = {}
    results = {}
    for version, module in versions.items():
        fn = group.calls[label](module)
        results[version] = fn(*args)
        derivs.testing.assert_close(
            results[version], expected, context=f"[{group.name} {label}, {version}]"
        )
        fns[version] = fn
    entries: dict[str, Callable[[], Any]] = {
        entry: partial(fns[version], *args) for entry, version in ENTRIES.items()
    }
    runs = [time_interleaved(entries, sync(device), **timing) for _ in range(trials)]
    return {
        "group": group.name,
        "call": label,
        "bitwise_equal": _bitwise_equal(results["before"], results["after"]),
        "times": runs,
    }


def summarize(case: dict[str, Any]) -> dict[str, float]:
    """A case's ratios over its trials: after / before and the A/A noise floor."""
    ratio = [t["after"] / t["before"] for t in case["times"]]
    noise = [t["before again"] / t["before"] for t in case["times"]]
    return {
        "before": min(t["before"] for t in case["times"]),
        "after": min(t["after"] for t in case["times"]),
        "ratio": statistics.median(ratio),
        "ratio_min": min(ratio),
        "ratio_max": max(ratio),
        "noise_min": min(noise),
        "noise_max": max(noise),
    }


def beyond_noise(s: dict[str, float]) -> bool:
    """Slower in every trial by more than the A/A pair ever differed."""
    return s["ratio_min"] > max(s["noise_max"], 1 / s["noise_min"])


def plain_path(module: types.ModuleType, device: str, **timing: Any) -> dict[str, float]:
    """Seconds per call of what pytrees added to a call on plain tensors, timed alone in
    ``module``: the operators' ``Flat`` (jacobian, hessian, batch operators) and
    ``flatten_primals`` (hvp, vhp), the oracles' ``Leaves`` (the ``loop`` methods)."""
    args = predict_inputs(16, 16, device)
    x, v = vector_inputs(2048, device)
    pytree, trees = module._pytree, module.oracles._trees
    fns = {
        "Flat": lambda: pytree.Flat("derivs.jacobian", args, (2,)).wrap(predict),
        "flatten_primals": lambda: pytree.flatten_primals("derivs.hvp", (x,), (v,), "tangents"),
        "Leaves": lambda: trees.Leaves("derivs.oracles.loop_jacobian", predict, args, 2),
    }
    return time_interleaved(fns, sync(device), **timing)


def _commit(root: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def _dirty(root: Path) -> bool:
    out = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "derivs"],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(out.stdout.strip())


def render(result: dict[str, Any]) -> str:
    before, after = result["versions"]["before"], result["versions"]["after"]
    lines = [
        "# Plain tensors before and after pytrees",
        "",
        f"{run_conditions(result)} (`python -m bench.pytree_overhead`, {result['seconds']:.0f} s;"
        f" load average at the end {result['load_end']}). `before`: derivs at {before} "
        f"(the commit before `derivs/_pytree.py`), `after`: derivs at {after}, both imported "
        "in one process. Each case times `before`, `after` and `before` again (the same call, "
        "a second closure: the noise floor) in interleaved blocks, each keeping its fastest of "
        f"{result['rounds']} blocks, {result['trials']} times over. Ratio: `after / before`, "
        "the median over the trials [their range]; noise: `before again / before` [its range]; "
        "`*`: slower in every trial than the A/A pair ever differed. The problems are "
        "`tests/bench`'s, from `bench.problems`; every result of both versions was checked "
        "against the closed form first.",
        "",
        "| group | median ratio | cases' range | noise range | results bit for bit |",
        "|---|---|---|---|---|",
    ]
    by_group: dict[str, list[dict[str, Any]]] = {}
    for case in result["cases"]:
        by_group.setdefault(case["group"], []).append(case)
    for name, cases in by_group.items():
        sums = [summarize(c) for c in cases]
        equal = sum(c["bitwise_equal"] for c in cases)
        lines.append(
            f"| {name} | **{fmt_ratio(statistics.median(x['ratio'] for x in sums))}** | "
            f"{min(x['ratio'] for x in sums):.2f} to {max(x['ratio'] for x in sums):.2f} | "
            f"{min(x['noise_min'] for x in sums):.2f} to {max(x['noise_max'] for x in sums):.2f} | "
            f"{equal} of {len(cases)} equal |"
        )
    lines += [
        "",
        "| group | derivs call | fastest before | fastest after | ratio [range] | noise [range] "
        "| equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in result["cases"]:
        s = summarize(case)
        mark = " *" if beyond_noise(s) else ""
        lines.append(
            f"| {case['group']} | {case['call']} | {fmt_time(s['before'])} | "
            f"{fmt_time(s['after'])} | {fmt_ratio(s['ratio'])}{mark} "
            f"[{s['ratio_min']:.2f}, {s['ratio_max']:.2f}] | "
            f"[{s['noise_min']:.2f}, {s['noise_max']:.2f}] | "
            f"{'yes' if case['bitwise_equal'] else 'no'} |"
        )
    fastest = min(summarize(c)["after"] for c in result["cases"])
    lines += [
        "",
        "What pytrees added to a call on plain tensors, timed alone (`after`): "
        + ", ".join(f"`{k}` {fmt_time(t)}" for k, t in result["plain_path"].items())
        + f"; the fastest call above took {fmt_time(fastest)}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = timing_parser(__doc__, "pytree_overhead", rounds=5, block=0.02)
    parser.add_argument("--before", required=True, help="a checkout of derivs before pytrees")
    parser.add_argument("--after", help="another checkout to compare (default: import derivs)")
    parser.add_argument("--trials", type=int, default=3, help="interleaved runs per case")
    parser.add_argument("--only", help="run the groups whose name contains this")
    args = parse_timing(parser, argv)
    if args.trials < 1:
        parser.error(f"--trials must be at least 1, got {args.trials}")
    versions = {"before": load_package(args.before)}
    versions["after"] = load_package(args.after) if args.after else derivs
    roots = {k: Path(str(m.__file__)).resolve().parent.parent for k, m in versions.items()}
    load = load_average()
    print(f"plain tensors before/after pytrees on {args.device}, load average {load}", flush=True)
    timing = {"rounds": args.rounds, "block_s": args.block, "clock": CLOCKS[args.clock]}
    start = time.perf_counter()
    cases = []
    for group in groups():
        if args.only and args.only not in group.name:
            continue
        for label in group.calls:
            case = measure_case(group, label, versions, args.device, trials=args.trials, **timing)
            s = summarize(case)
            print(
                f"  {group.name:28s} {label:16s} after/before {s['ratio']:.3f} "
                f"[{s['ratio_min']:.3f}, {s['ratio_max']:.3f}]  "
                f"noise [{s['noise_min']:.3f}, {s['noise_max']:.3f}]",
                flush=True,
            )
            cases.append(case)
    added = plain_path(versions["after"], args.device, **timing)
    result = {
        **run_facts(args, load),
        "plain_path": added,
        "trials": args.trials,
        "seconds": round(time.perf_counter() - start, 1),
        "load_end": load_average(),
        "versions": {
            k: _commit(root) + (" (uncommitted changes in derivs/)" if _dirty(root) else "")
            for k, root in roots.items()
        },
        "cases": cases,
    }
    write_outputs(result, render(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
