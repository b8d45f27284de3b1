"""The documentation runs: every Python block of README.md and docs/, and every doctest in derivs.

Markdown: each fenced block whose info string is exactly ``python`` in ``README.md`` and
``docs/**/*.md`` is executed, in order, in one namespace per file (blocks of a page may build
on each other); one test per file, its id the path. Blocks not meant to run say ``pycon``,
``console``, ``bash`` or ``text``. A failure names the file and the line of the block's
opening fence, and the traceback points at the line in the Markdown file.

Docstrings: ``doctest`` over each module of the ``derivs`` package (subpackages included), one
test per module that has examples.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import pathlib
import pkgutil
import re
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


def run_markdown(path: pathlib.Path, label: str | None = None) -> int:
    """Execute the ``python`` blocks of ``path`` in order, in one namespace; return how many ran.

    Raises:
        DocBlockError: a block raised; the message names ``label`` (default: the path) and
            the block's line, the original exception is chained.
    """
    label = label or str(path)
    ran = 0
    with _isolated("docs_page_" + re.sub(r"\W", "_", label)) as module:
        for block in python_blocks(path.read_text(encoding="utf-8")):
            # NOTE: padding with the lines before the block gives the code the Markdown
            # file's own line numbers, so a traceback points into the page.
            code = compile("\n" * block.line + block.source, label, "exec")
            try:
                exec(code, module.__dict__)
            except Exception as e:
                where = f"{label}: the python block at line {block.line}"
                raise DocBlockError(f"{where} raised {type(e).__name__}: {e}") from e
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
