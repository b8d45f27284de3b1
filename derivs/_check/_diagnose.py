"""Diagnosis: which results of one operator disagree, and which derivative rule to blame
(the package docstring says how the verdict is reached)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from derivs._check._compare import Comparisons
from derivs._check._kink import Sided
from derivs._check._sources import Source

#: (a result that differs from the arbiter, the arbiter) -> the one-sided derivatives there.
KinkProbe = Callable[[Source, Source], Sided | None]

# NOTE: tags name the derivative rules a result rests on; the verdict looks for the tag that
# every outlier carries and no agreeing result does. Order = preference when several explain
# the outliers equally (the most basic rule first).
CAUSES: dict[str, tuple[str, str]] = {
    "vjp": ("rev-mode methods", "the backward (vjp) of this function is wrong"),
    "jvp": ("forward-mode methods", "the jvp (forward-mode derivative) of this function is wrong"),
    "d_vjp": (
        "methods that differentiate the backward",
        "the double backward (the derivative of the backward) of this function is wrong: the "
        "backward gives the right gradient, but differentiating it does not (a .detach(), "
        "torch.no_grad() or a wrong term inside backward?)",
    ),
    "d_jvp": (
        "methods that differentiate the jvp",
        "the derivative of the jvp rule of this function is wrong: the jvp gives the right "
        "first derivative, but differentiating it does not",
    ),
    "d_vjp_fwd": (
        "forward-over-reverse methods",
        "forward mode through the backward gives a wrong second derivative",
    ),
    "d_vjp_rev": (
        "reverse-over-reverse methods",
        "double backward (reverse mode through the backward) gives a wrong second derivative",
    ),
    "d_jvp_fwd": (
        "forward-over-forward methods",
        "nested forward mode through the jvp rule gives a wrong second derivative",
    ),
    "d_jvp_rev": (
        "reverse-over-forward methods",
        "reverse mode through the jvp rule gives a wrong second derivative",
    ),
    "vmap": ("vmapped methods", "the function misbehaves under torch.vmap (its batching rule?)"),
    "sum": (
        "the sum trick",
        "func couples samples in a way derivs' probe missed: the sum trick is not valid for it",
    ),
    "complex": (
        "the complex step",
        "func is not holomorphic on complex input, so the complex step does not apply",
    ),
    "eval": (
        "finite differences",
        "func may not be differentiable here (a kink such as relu or abs at 0); try another point",
    ),
}
_PAIR_CAUSES: dict[frozenset[str], tuple[str, str]] = {
    frozenset({"vjp", "vmap"}): (
        "vmapped rev-mode methods",
        "the backward is right in a plain loop but wrong under torch.vmap: its batching rule is wrong",
    ),
    frozenset({"jvp", "vmap"}): (
        "vmapped forward-mode methods",
        "the jvp is wrong under torch.vmap: its batching rule is wrong",
    ),
}
# NOTE: what a group of raising results shares, stated as a fact: the raises that have an
# established reason other than a wrong derivative are skips already (_limits).
_ERROR_CAUSES = {
    "vjp": "reverse mode (the backward) raised for this function",
    "jvp": "forward mode (the jvp) raised for this function",
    "vmap": "methods under torch.vmap raised for this function",
    "d_vjp": "differentiating the backward raised for this function",
    "d_jvp": "differentiating the jvp rule raised for this function",
}
_KINK = (
    "func is not differentiable at this point (a kink, such as relu or abs at 0); try another point"
)
_BOTH = (
    "the backward (vjp) and the jvp of this function are both wrong, the same way: func is "
    "differentiable here (its one-sided differences agree) and they disagree with its finite "
    "differences"
)
_UNSURE = (
    "the AD methods agree with each other but not with the finite differences, and the "
    "one-sided differences could not tell a kink from wrong rules"
)

Rule = str | frozenset[str]
Groups = list[tuple[list[Source], tuple[str, str]]]


@dataclass
class Diagnosis:
    line: str  # the operator's verdict
    problem: bool
    causes: tuple[str, ...] = ()  # the short explanations, for the headline
    found: frozenset[str] = frozenset()  # the rules found wrong (their tags)
    verified: bool = True  # False: no independent (value-based) oracle judged the methods


def diagnose(
    operator: str,
    sources: list[Source],
    cmp: Comparisons,
    untrusted: set[str],
    kink: KinkProbe | None = None,
    cleared: set[str] | None = None,
) -> Diagnosis:
    """Explain one operator's results: who disagrees with whom, and which rule is to blame.

    ``untrusted``: the rules found wrong by the operators diagnosed before this one;
    ``kink``: the one-sided differences where a result differs from the arbiter (first order);
    ``cleared``: the first-order rules (vjp, jvp) methods of earlier operators got right
    against an arbiter, never blamed again; this call adds its own.
    """
    cleared = set() if cleared is None else cleared
    ok = [s for s in sources if s.status == "ok"]
    failed = [s for s in sources if s.status == "error"]
    prefix, reason = _raised(failed, ok)
    if not any(not s.oracle for s in ok):
        skipped = [s for s in sources if s.status == "skip" and not s.oracle]
        line = prefix.rstrip("; ") or (
            f"not checked: {_names(skipped)} could not run (see the notes)"
            if skipped
            else "nothing was computed"
        )
        return Diagnosis(line, bool(failed), reason)
    arbiters = [
        s
        for s in ok
        if s.oracle and (s.name[:2] in ("cs", "fd") or s.name == "ref") and not s.tags & untrusted
    ]
    if arbiters:
        d = _against(arbiters[0], ok, cmp, kink, cleared)
    else:
        d = _by_clusters(operator, ok, cmp, untrusted)
    return Diagnosis(
        prefix + d.line, d.problem or bool(failed), d.causes or reason, d.found, d.verified
    )


def _raised(failed: list[Source], ok: list[Source]) -> tuple[str, tuple[str, ...]]:
    """(verdict prefix, cause) for the sources that raised: the rule they share, if any."""
    if not failed:
        return "", ()
    common = frozenset.intersection(*(s.tags for s in failed))
    text = next(
        (
            text
            for tag, text in _ERROR_CAUSES.items()
            if tag in common and not any(tag in s.tags for s in ok)
        ),
        f"{_names(failed)} raised",
    )
    return f"{_names(failed)} raised ({failed[0].note}): {text}; ", (text,)


def _against(
    arbiter: Source, ok: list[Source], cmp: Comparisons, kink: KinkProbe | None, cleared: set[str]
) -> Diagnosis:
    """The outliers are those that disagree with the arbiter; blame the rule they share,
    unless the finite differences themselves show a kink."""
    good = [s for s in ok if s is arbiter or cmp.agree(s, arbiter)]
    bad = [s for s in ok if s not in good]
    before = frozenset(cleared)
    cleared |= {t for s in good if not s.oracle for t in s.tags & {"vjp", "jvp"}}
    if not bad:
        refs = [s for s in good if s.oracle]
        methods = [s for s in good if not s.oracle]
        what = (
            f"all {len(methods)} methods agree" if len(methods) > 1 else f"{_names(methods)} agrees"
        )
        return Diagnosis(
            f"{what} with {_names(refs)}" if methods else f"{_names(refs)} agree", False
        )
    # NOTE: a kink shows in the finite differences themselves (the one-sided ones differ);
    # it is looked for only where no AD result agrees with the value-based oracles.
    ad_bad = [s for s in bad if "eval" not in s.tags]
    only_values = bool(ad_bad) and all("eval" in s.tags for s in good)
    sided = kink(ad_bad[0], arbiter) if only_values and kink is not None else None
    if sided is not None and sided.kink:
        line = (
            f"{_names(bad)} disagree with {_names(good)}, whose one-sided differences differ "
            f"there ({sided.where}: {sided.right:.6g} from the right, {sided.left:.6g} from "
            f"the left): {_KINK}"
        )
        return Diagnosis(line, True, (_KINK,))
    explanation = _explain(bad, good, before)
    if explanation is not None and len(explanation) == 1:
        return _explained(explanation, good)
    if only_values and all(cmp.agree(ad_bad[0], s) for s in ad_bad[1:]):
        why = _UNSURE if sided is None else _BOTH
        line = f"{_names(bad)} agree with each other but disagree with {_names(good)}: {why}"
        return Diagnosis(line, True, (why,), frozenset({"vjp", "jvp"}) if sided else frozenset())
    if explanation is not None:
        return _explained(explanation, good)
    line = f"{_names(bad)} disagree with {_names(good)}; see the rows"
    return Diagnosis(line, True, (line,))


def _by_clusters(
    operator: str, ok: list[Source], cmp: Comparisons, untrusted: set[str]
) -> Diagnosis:
    """No independent arbiter (no fd oracle, or it rests on a rule found wrong at first
    order): describe the clusters of mutually agreeing results."""
    groups = _clusters(ok, cmp.agree)
    if len(groups) == 1:
        tainted = frozenset.intersection(*(s.tags for s in ok)) & untrusted
        if tainted:
            rule = "backward" if "vjp" in tainted else "jvp"
            line = (
                f"all {_count(ok)} agree, but every one rests on the {rule}, found wrong "
                "above: they agree on a wrong answer"
            )
            return Diagnosis(line, True)
        who = f"all {_count(ok)}" if len(ok) > 2 else _names(ok)
        return Diagnosis(f"{who} agree (no independent oracle)", False, verified=False)
    tainted_groups = [g for g in groups if frozenset.intersection(*(s.tags for s in g)) & untrusted]
    if tainted_groups:
        g = tainted_groups[0]
        rest = [s for s in ok if s not in g]
        rule = "backward" if "vjp" in frozenset.intersection(*(s.tags for s in g)) else "jvp"
        line = (
            f"{_names(g)} rest on the {rule}, found wrong above, and disagree with "
            f"{_names(rest)}: as expected (no {operator} oracle is independent of the {rule})"
        )
        return Diagnosis(line, True)
    majority, minority = groups[0], [s for g in groups[1:] for s in g]
    explanation = _explain(minority, majority)
    if explanation is not None:
        return _explained(explanation, majority)
    line = f"{_names(minority)} disagree with {_names(majority)}; see the rows"
    return Diagnosis(line, True, (line,))


def _explain(
    bad: Sequence[Source], good: Sequence[Source], cleared: frozenset[str] = frozenset()
) -> Groups | None:
    """Group the ``bad`` sources by the rule to blame: one that every source of the group uses
    and no ``good`` source does. One group when a single rule explains them all; else the
    rule explaining the most first (two bugs at once, or a torch limitation on top of a bug).
    None when some bad source is explained by no rule."""
    tags: set[str] = set().union(*(s.tags for s in bad))
    singles: list[Rule] = [t for t in CAUSES if t in tags]
    singles += sorted(t for t in tags if t.startswith(("m:", "o:")))
    candidates = singles + list(_PAIR_CAUSES)
    usable = [r for r in candidates if r not in cleared and not any(_uses(g, r) for g in good)]
    for rule in usable:  # NOTE: a single rule explaining every outlier wins outright
        if all(_uses(s, rule) for s in bad):
            return [(list(bad), _cause_of(rule))]
    groups: Groups = []
    left = list(bad)
    while left:
        scored = [(sum(_uses(s, r) for s in left), -k, r) for k, r in enumerate(usable)]
        count, _, rule = max(scored, key=lambda t: (t[0], t[1]), default=(0, 0, ""))
        if not count:
            return None
        groups.append(([s for s in left if _uses(s, rule)], _cause_of(rule)))
        left = [s for s in left if not _uses(s, rule)]
    return groups


def _uses(src: Source, rule: Rule) -> bool:
    return rule <= src.tags if isinstance(rule, frozenset) else rule in src.tags


def _explained(groups: Groups, good: Sequence[Source]) -> Diagnosis:
    """The diagnosis for the groups of ``_explain``."""
    parts = []
    for k, (members, (label, why)) in enumerate(groups):
        verb = f"disagree with {_names(good)}" if k == 0 else "also disagree"
        parts.append(f"{label} ({_names(members)}) {verb}: {why}")
    causes = tuple(why for _, (_, why) in groups)
    found: frozenset[str] = frozenset().union(*(_found(cause) for _, cause in groups))
    return Diagnosis("; ".join(parts), True, causes, found)


def _cause_of(rule: Rule) -> tuple[str, str]:
    """(who, why) for a rule: a derivative rule, a pair of them, a method or an oracle."""
    if isinstance(rule, frozenset):
        return _PAIR_CAUSES[rule]
    if rule.startswith("m:"):
        return (
            f"method {rule[2:]!r}",
            f"a bug in derivs' {rule[2:]!r} method (please report it with this report)",
        )
    if rule.startswith("o:"):
        return (f"the {rule[2:]} oracle", "a bug in derivs.oracles (please report it)")
    return CAUSES[rule]


def _found(cause: tuple[str, str]) -> frozenset[str]:
    """The tags of the rules that ``cause`` says are wrong."""
    tags = {t for t, c in CAUSES.items() if c == cause}
    tags |= {t for pair, c in _PAIR_CAUSES.items() if c == cause for t in pair}
    return frozenset(tags)


def _clusters(sources: list[Source], agree: Callable[[Source, Source], bool]) -> list[list[Source]]:
    """Connected components of the agreement graph, largest first."""
    groups: list[list[Source]] = []
    for s in sources:
        joined = [g for g in groups if any(agree(s, t) for t in g)]
        merged = [s, *itertools.chain.from_iterable(joined)]
        groups = [g for g in groups if g not in joined] + [merged]
    for g in groups:
        g.sort(key=sources.index)
    return sorted(groups, key=lambda g: (-len(g), sources.index(g[0])))


def _names(sources: Iterable[Source]) -> str:
    """``a, b and c``; the loop oracle is called so, to tell it from the loop method."""
    names = [s.name + (" oracle" if s.oracle and s.name == "loop" else "") for s in sources]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _count(sources: Sequence[Source]) -> str:
    """``3 methods and 2 oracles``."""
    m = sum(not s.oracle for s in sources)
    o = len(sources) - m
    parts = [f"{m} method{'s' * (m != 1)}" if m else "", f"{o} oracle{'s' * (o != 1)}" if o else ""]
    return " and ".join(p for p in parts if p)
