"""Sphinx configuration of the derivs documentation site.

Build: ``tox -e docs``, or ``pip install -e '.[docs,test]'`` and
``sphinx-build -E -W --keep-going -n -b html docs docs/_build/html``.
Why Sphinx + MyST + furo (not MkDocs): ``docs/development.md``.
"""

from __future__ import annotations

import os

# NOTE: the site documents the derivs that is installed, under the names users import:
# `pip install -e '.[docs,test]'` maps them to this checkout (strategies/ as derivs.strategies,
# pyproject's package-dir), tox -e docs installs the wheel built from it.
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
        "pytest": ("https://docs.pytest.org/en/stable", None),
        "hypothesis": ("https://hypothesis.readthedocs.io/en/latest", None),
    }
    if os.environ.get("DERIVS_DOCS_INTERSPHINX") == "1"
    else {}
)

# Every cross-reference must resolve (-n). Sphinx itself lets builtins and typing names pass;
# the only other names without a target here are those documented in another project's
# inventory (see intersphinx above): collections.abc's, torch's, pytest's and Hypothesis',
# as they appear in the type hints of the signatures and the Raises sections.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:class", r"collections\.abc\.\w+"),
    (r"py:(class|func|data|obj)", r"torch(\.\w+)+"),
    (r"py:(class|exc)", r"(pytest|hypothesis)(\.\w+)+"),
]

html_theme = "furo"
html_title = f"derivs {release}"
html_static_path = ["_static"]
html_css_files = ["derivs.css"]
html_show_sourcelink = False
pygments_style = "friendly"


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Leave out the fields of NamedTuples: their generated docstrings read "Alias for field
    number 0", and the class docstring already describes them."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
