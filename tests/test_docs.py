"""The documentation runs: every Python block of README.md and docs/, and every doctest in derivs.

Markdown: each fenced block whose info string is exactly ``python`` in ``README.md`` and
``docs/**/*.md`` is executed, in order, in one namespace per file (blocks of a page may build
on each other); one test per file, its id the path. Blocks not meant to run say ``pycon``,
``console``, ``bash`` or ``text``. A failure names the file and the line of the block's
opening fence, and the traceback points at the line in the Markdown file.

Recorded outputs: a ``text`` block right under the line ``<!-- output of the python block
above -->`` is what the page's previous ``python`` block prints, and each ``console`` block
whose command is ``$ python -m derivs ...`` is that command's output; both are rerun and
compared, so a stale recording fails. The comparison is exact but for three things a recording
may not fix: the wall time of a ``derivs.check:`` header (``(4.33 s)``), the torch version a
line names (``torch 2.13.0+cpu``), and lines left out
for brevity, written as a line ``...`` (or ``...  (a note)``), which stand for any number of
lines. The numbers are compared as printed (the reports print two significant digits of
float64 results of seeded computations, the same at any thread count).

Names: every public name the API pages (``README.md``, ``docs/api.md``,
``docs/strategies-api.md``, ``docs/guide/*.md``) spell out, in backticks
(``derivs.testing.assert_close``) or as an autodoc target, resolves as written: imported and
looked up attribute by attribute, as ``import derivs.testing; derivs.testing.assert_close``
would.

Docstrings: ``doctest`` over each module of the ``derivs`` package (subpackages included), one
test per module that has examples.
"""

from __future__ import annotations

import contextlib
import difflib
import doctest
import importlib
import io
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import NamedTuple

import pytest
import torch

import derivs

ROOT = pathlib.Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
# An info string that reads as Python but is not exactly "python", so its block would not run.
_LOOKS_LIKE_PYTHON = re.compile(
    r"(?i)\s*(\{code(-block|-cell)?\}\s*)?(py|py3|python[0-9.]*|ipython[0-9]*)(\s.*)?"
)


class Block(NamedTuple):
    line: int  # 1-based line of the opening fence
    info: str
    source: str


class DocBlockError(AssertionError):
    """A Python block of a Markdown file raised; the message names the file and the line."""


class StaleRecordingError(AssertionError):
    """A recorded output differs from what its code prints now; the message is the diff."""


OUTPUT_MARK = "<!-- output of the python block above -->"
# a recorded line that stands for lines left out, and the wall time of a check report's header
_ELIDED = re.compile(r"\.\.\.( .*)?")
_WALL_TIME = re.compile(r"\(\d+(?:\.\d+)? s\)$")
# NOTE: a skip reason names the running torch ("torch 2.13.0+cpu does not ..."): the
# recording holds for any torch on which the same reason applies.
_TORCH = re.compile(r"torch \d+\.\d+\.\d+(?:\+\w+)?")


def _literal(text: str) -> str:
    """``text`` as a regex, but for the torch version it names (``torch 2.13.0+cpu``)."""
    return r"torch \d+\.\d+\.\d+(?:\+\w+)?".join(re.escape(p) for p in _TORCH.split(text))


def _line_pattern(line: str) -> str:
    """One recorded line as a regex: literal, the header's wall time any time."""
    if line.startswith("derivs.check: ") and _WALL_TIME.search(line):
        head = _WALL_TIME.sub("", line)
        return _literal(head) + r"\(\d+(?:\.\d+)? s\)"
    return _literal(line)


def matches_recording(recorded: str, actual: str) -> bool:
    """Whether ``actual`` is ``recorded`` up to its elisions and wall times (module docstring)."""
    parts = [
        r"(?:[^\n]*\n)*?" if _ELIDED.fullmatch(line) else _line_pattern(line) + r"\n"
        for line in recorded.rstrip("\n").split("\n")
    ]
    return re.fullmatch("".join(parts), actual.rstrip("\n") + "\n") is not None


def check_recording(recorded: str, actual: str, where: str) -> None:
    """Raise StaleRecordingError, with a diff to re-record from, unless they match."""
    if matches_recording(recorded, actual):
        return
    diff = difflib.unified_diff(
        recorded.splitlines(), actual.splitlines(), "recorded", "now", lineterm=""
    )
    raise StaleRecordingError(f"{where}: the recorded output is stale\n" + "\n".join(diff))


def fenced_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text (CommonMark fences: ``` or ~~~).

    A fence closes at a line of the same character, at least as long, with nothing else on
    it; an unclosed fence runs to the end. Content is de-indented by the opening fence's
    indentation (fences inside list items).
    """
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        close = re.compile(rf" *{re.escape(fence[0])}{{{len(fence)},}} *")
        body = []
        j = i + 1
        while j < len(lines) and not close.fullmatch(lines[j]):
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            j += 1
        blocks.append(Block(i + 1, m["info"].strip(), "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def python_blocks(text: str) -> list[Block]:
    return [b for b in fenced_blocks(text) if b.info == "python"]


@contextlib.contextmanager
def _isolated(name: str) -> Iterator[types.ModuleType]:
    """A fresh module to run a page in; the RNG and derivs' memory budget are restored after."""
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    budget = derivs.get_memory_budget()
    try:
        with torch.random.fork_rng(devices=[]):
            yield module
    finally:
        derivs.set_memory_budget(budget)
        del sys.modules[name]


def _is_output(lines: list[str], block: Block) -> bool:
    """Whether ``block`` is a ``text`` block right under the output mark."""
    return block.info == "text" and block.line >= 2 and lines[block.line - 2] == OUTPUT_MARK


def run_markdown(path: pathlib.Path, label: str | None = None) -> int:
    """Execute the ``python`` blocks of ``path`` in order, in one namespace; return how many ran.

    A ``text`` block under the output mark is compared with what the python block before it
    printed.

    Raises:
        DocBlockError: a block raised; the message names ``label`` (default: the path) and
            the block's line, the original exception is chained.
        StaleRecordingError: a recorded output differs from the printed one.
    """
    label = label or str(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    ran = 0
    printed: str | None = None
    with _isolated("docs_page_" + re.sub(r"\W", "_", label)) as module:
        for block in fenced_blocks(text):
            if _is_output(lines, block):
                if printed is None:
                    raise DocBlockError(
                        f"{label}:{block.line}: an output with no python block above"
                    )
                check_recording(block.source, printed, f"{label}:{block.line}")
            if block.info != "python":
                continue
            # NOTE: padding with the lines before the block gives the code the Markdown
            # file's own line numbers, so a traceback points into the page.
            code = compile("\n" * block.line + block.source, label, "exec")
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(code, module.__dict__)
            except Exception as e:
                where = f"{label}: the python block at line {block.line}"
                raise DocBlockError(f"{where} raised {type(e).__name__}: {e}") from e
            printed = out.getvalue()
            ran += 1
    return ran


def _markdown_files() -> list[pathlib.Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
    return [ROOT / "README.md", *docs]


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


PAGES = [p for p in _markdown_files() if python_blocks(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("path", PAGES, ids=[_rel(p) for p in PAGES])
def test_python_blocks_run(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # pages name files relative to the repository root
    assert run_markdown(path, _rel(path)) > 0


def test_no_python_block_is_left_out() -> None:
    """A block that reads as Python but is not marked exactly ``python`` would never run."""
    missed = [
        f"{_rel(p)}:{b.line}: ```{b.info}"
        for p in _markdown_files()
        for b in fenced_blocks(p.read_text(encoding="utf-8"))
        if b.info != "python" and _LOOKS_LIKE_PYTHON.fullmatch(b.info)
    ]
    assert not missed, "mark these `python` (run) or `pycon`/`text` (not run):\n" + "\n".join(
        missed
    )


def _modules_with_doctests() -> list[tuple[str, list[doctest.DocTest]]]:
    found = []
    for info in pkgutil.walk_packages(derivs.__path__, "derivs."):
        module = importlib.import_module(info.name)
        tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
        if tests:
            found.append((info.name, tests))
    return found


DOCTESTS = _modules_with_doctests()


@pytest.mark.parametrize(("name", "tests"), DOCTESTS, ids=[name for name, _ in DOCTESTS])
def test_doctests(name: str, tests: list[doctest.DocTest]) -> None:
    # NOTE: ELLIPSIS lets an expected traceback show the first line of a long message only.
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    with torch.random.fork_rng(devices=[]):
        for test in tests:
            runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{name}: {failed} of {attempted} doctest examples failed\n" + "".join(
        report
    )


# Meta-tests: the runner above can fail, and reports where.


def test_a_broken_block_is_named_by_file_and_line(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n"
        "\n"
        "```python\n"
        "x = 1\n"
        "```\n"
        "\n"
        "```pycon\n"
        ">>> raise RuntimeError('a pycon block must not run')\n"
        "```\n"
        "\n"
        "````text\n"
        "```python\n"
        "raise RuntimeError('a block inside a longer fence must not run')\n"
        "```\n"
        "````\n"
        "\n"
        "- an item\n"
        "\n"
        "  ```python\n"
        "  assert x == 1  # the namespace is shared across blocks\n"
        "  y = 1 / (x - 1)\n"
        "  ```\n",
        encoding="utf-8",
    )
    with pytest.raises(DocBlockError, match=r"^page\.md: the python block at line 19 raised "):
        run_markdown(page, "page.md")
    try:
        run_markdown(page, "page.md")
    except DocBlockError as e:
        assert isinstance(e.__cause__, ZeroDivisionError)
        tb = e.__cause__.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        assert (tb.tb_frame.f_code.co_filename, tb.tb_lineno) == ("page.md", 21)


def test_fences_are_parsed_as_commonmark() -> None:
    text = (
        "~~~python\n"
        "a = 1\n"
        "~~~\n"
        "``` python \n"
        "b = 2\n"
        "```\n"
        "````python\n"
        "```\n"
        "c = 3\n"
        "`````\n"
        "```{eval-rst}\n"
        ".. autofunction:: derivs.jacobian\n"
        "```\n"
        "```python\n"
        "unclosed = True\n"
    )
    blocks = fenced_blocks(text)
    assert [(b.line, b.info) for b in blocks] == [
        (1, "python"),
        (4, "python"),
        (7, "python"),
        (11, "{eval-rst}"),
        (14, "python"),
    ]
    assert [b.source for b in python_blocks(text)] == [
        "a = 1\n",
        "b = 2\n",
        "```\nc = 3\n",
        "unclosed = True\n",
    ]
    near = ["py", "Python", "python3", "{code-block} python", "python title='x'"]
    assert all(_LOOKS_LIKE_PYTHON.fullmatch(info) for info in near)
    assert not any(_LOOKS_LIKE_PYTHON.fullmatch(i) for i in ["pycon", "text", "bash", "console"])


# Recorded command lines: `$ python -m derivs ...` transcripts, rerun.

_COMMAND = "$ python -m derivs "


def _transcripts() -> list[tuple[str, Block]]:
    found = []
    for path in _markdown_files():
        for block in fenced_blocks(path.read_text(encoding="utf-8")):
            if block.info == "console" and block.source.startswith(_COMMAND):
                found.append((_rel(path), block))
    return found


TRANSCRIPTS = _transcripts()


def run_transcript(source: str) -> tuple[str, str]:
    """A console block's one ``$`` command, run by bash at the repository root, and what it
    printed (stdout and stderr, in order) beside what the block records."""
    command, _, recorded = source.partition("\n")
    python = pathlib.Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERIVS_")}
    env["PATH"] = f"{python}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", command.removeprefix("$ ")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return recorded, done.stdout


@pytest.mark.parametrize(
    ("page", "block"), TRANSCRIPTS, ids=[f"{page}:{b.line}" for page, b in TRANSCRIPTS]
)
def test_recorded_command_output_is_current(page: str, block: Block) -> None:
    assert "\n$ " not in block.source, f"{page}:{block.line}: one command per console block"
    recorded, actual = run_transcript(block.source)
    check_recording(recorded, actual, f"{page}:{block.line}")


def test_stale_recordings_fail() -> None:
    report = "derivs.check: f(float64[4]*)  order=1  on cpu  (3.72 s)\nrow a\nrow b\nrow c\nverdict: PASS\n"
    assert matches_recording(report.replace("3.72", "12.5"), report)  # the wall time
    assert matches_recording(
        "derivs.check: f(float64[4]*)  order=1  on cpu  (3.72 s)\n...\nverdict: PASS\n", report
    )
    assert matches_recording("...  (rows left out)\nverdict: PASS", report)
    assert not matches_recording(report.replace("order=1", "order=2"), report)
    assert not matches_recording(report.replace("row b", "row B"), report)
    assert not matches_recording("...\nrow c\n", report)  # the end is not elided
    assert not matches_recording(report.replace("(3.72 s)", "(x s)"), report)
    limit = "not run: torch 2.13.0+cpu does not differentiate it\n"
    assert matches_recording(limit, limit.replace("2.13.0+cpu", "2.14.1+cu130"))
    assert not matches_recording(limit, limit.replace("torch 2.13.0+cpu", "derivs"))
    with pytest.raises(StaleRecordingError, match=r"(?s)^here: .*\n-row b\n\+row x"):
        check_recording(report, report.replace("row b", "row x"), "here")


def test_an_output_block_is_compared_with_what_its_block_printed(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "page.md"
    body = "```python\nprint('a'); print(1 + 1)\n```\n\n" + OUTPUT_MARK + "\n```text\na\n{}\n```\n"
    page.write_text(body.format("2"), encoding="utf-8")
    assert run_markdown(page, "page.md") == 1
    page.write_text(body.format("3"), encoding="utf-8")
    with pytest.raises(StaleRecordingError, match=r"^page\.md:6: the recorded output is stale"):
        run_markdown(page, "page.md")


# Names: every public name the API pages spell out resolves as written.

NAME_PAGES = ["README.md", "docs/api.md", "docs/strategies-api.md", "docs/guide/*.md"]
_ROOTS = ("derivs", "pytest_derivs")
_BACKTICKED = re.compile(r"`((?:derivs|pytest_derivs)(?:\.[A-Za-z_]\w*)*)[`(:\[ ]")
_DIRECTIVE = re.compile(r"^\.\. (currentmodule|py:module|auto\w+|py:\w+):: ([\w.]+)", re.MULTILINE)


def documented_names(text: str) -> set[str]:
    """The derivs names in backticks, and the targets of autodoc and py: directives (with
    the current module in front of a relative one)."""
    names = set(_BACKTICKED.findall(text))
    for block in fenced_blocks(text):
        if block.info != "{eval-rst}":
            continue
        module = ""
        for kind, target in _DIRECTIVE.findall(block.source):
            if kind in ("currentmodule", "py:module", "automodule"):
                module = target
            full = target if target.split(".")[0] in _ROOTS or not module else f"{module}.{target}"
            if full.split(".")[0] in _ROOTS:
                names.add(full)
    return names


def resolve(name: str) -> object:
    """``name`` looked up as code spells it: the top package imported, then attribute by
    attribute, a submodule imported only where the attribute is missing (so a function that
    shadows its module's name hides the module, as it does in code)."""
    parts = name.split(".")
    obj: object = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        if not hasattr(obj, part):
            with contextlib.suppress(ModuleNotFoundError):
                importlib.import_module(".".join(parts[:i]))
        obj = getattr(obj, part)
    return obj


def _name_pages() -> list[pathlib.Path]:
    return sorted({p for pattern in NAME_PAGES for p in ROOT.glob(pattern)})


@pytest.mark.parametrize("path", _name_pages(), ids=[_rel(p) for p in _name_pages()])
def test_documented_names_resolve(path: pathlib.Path) -> None:
    names = documented_names(path.read_text(encoding="utf-8"))
    broken = []
    for name in sorted(names):
        try:
            resolve(name)
        except (ImportError, AttributeError) as e:
            broken.append(f"{name}: {type(e).__name__}: {e}")
    assert not broken, f"{_rel(path)} names what does not resolve:\n" + "\n".join(broken)


def test_names_resolve_as_written() -> None:
    text = "`derivs.testing.assert_close` and {class}`derivs.CheckReport`, `derivs.hessian(f)`\n```{eval-rst}\n.. currentmodule:: derivs.conformance\n\n.. autofunction:: load\n.. autoclass:: derivs.sparse.SparseTransform\n```\n"
    assert documented_names(text) == {
        "derivs.testing.assert_close",
        "derivs.CheckReport",
        "derivs.hessian",
        "derivs.conformance",  # the current module, a name too
        "derivs.conformance.load",
        "derivs.sparse.SparseTransform",
    }
    import derivs.testing

    assert resolve("derivs.testing.assert_close") is derivs.testing.assert_close
    with pytest.raises(AttributeError):
        resolve("derivs.check.CheckReport")  # derivs.check is the function, as in code
    with pytest.raises(AttributeError):
        resolve("derivs.no_such_name")
