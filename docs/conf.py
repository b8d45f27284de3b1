"""Sphinx configuration of the derivs documentation site.

Build: ``tox -e docs``, or ``pip install -e '.[docs]'`` and
``sphinx-build -E -W --keep-going -n -b html docs docs/_build/html``.
Why Sphinx + MyST + furo (not MkDocs): ``docs/development.md``.
"""

from __future__ import annotations

import os

import derivs

project = "derivs"
author = "the derivs authors"
copyright = "the derivs authors, BSD-3-Clause"
release = derivs.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: slug anchors for headings down to ###, so [text](page.md#a-heading) links resolve and
# a link to a missing page or anchor is a warning (an error under -W).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc + napoleon read the Google-style docstrings the library already has.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
# NOTE: types go into the parameter list, not the signature: the signatures then read like the
# tables of the guide (jacobian(func, argnums=0, *, method='auto', ...)).
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True

# NOTE: intersphinx needs the network, which the machines that build these docs do not have;
# an unreachable inventory is a warning, so the mapping is opt-in. With
# DERIVS_DOCS_INTERSPHINX=1 (and a network) names of Python and PyTorch become links.
intersphinx_mapping = (
    {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
    }
    if os.environ.get("DERIVS_DOCS_INTERSPHINX") == "1"
    else {}
)

# Every cross-reference must resolve (-n), except names whose documentation lives in another
# project's inventory (see intersphinx above): the standard library's and torch's. These have
# no target in this site; everything of derivs' own must.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:(class|exc|obj|data|func)", r"(builtins\.)?[A-Z][a-zA-Z]*(Error|Exception)"),
    (r"py:(class|obj)", r"(typing|collections\.abc|contextlib|types)\.\w+"),
    (r"py:(class|obj|func|data)", r"torch(\.\w+)+"),
]

html_theme = "furo"
html_title = f"derivs {release}"
html_static_path = ["_static"]
html_css_files = ["derivs.css"]
html_show_sourcelink = False
pygments_style = "friendly"
