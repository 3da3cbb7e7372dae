"""The HTML shell of the explainer pages: inline CSS, the conv calculator (plain JS), tables, figures.

A page is one ``index.html`` with its figures as PNG files beside it (``figures/``); it loads nothing
from the network. Its HTML, CSS and JavaScript are files in ``templates/`` (package data), read by
``template`` and filled by ``fill``. The calculator reproduces ``onebyone.cost.conv_cost`` for a 2-D conv on one image:
the browser tests compare the two on a table of cases.
"""
from __future__ import annotations

import functools
import html
import re
from importlib import resources
from pathlib import Path

from .cost import CONVENTION
from .errors import OneByOneError

TEMPLATES = "templates"  # the folder of a package's page files: HTML, CSS and JavaScript, read as package data
# {{name}}: found nowhere in the pages' JavaScript or CSS, and fill() refuses a name it has no value for, so a clash
# would stop the page being written, never change it quietly ($name would meet the regular expressions' $)
PLACEHOLDER = re.compile(r"\{\{([a-z_][a-z0-9_]*)\}\}")


@functools.lru_cache(maxsize=None)
def template(name: str, package: str = __package__) -> str:
    """The text of ``package``'s file ``templates/<name>`` (``name`` may hold ``/``), without the file's final
    newline; read as package data, so an installed package finds it as the source tree does."""
    path = resources.files(package).joinpath(TEMPLATES)
    for part in name.split("/"):
        path = path.joinpath(part)
    try:
        return path.read_text(encoding="utf-8").removesuffix("\n")
    except FileNotFoundError as e:
        raise OneByOneError(f"no page file {TEMPLATES}/{name} in {package}: the install is incomplete") from e


def fill(text: str, **values) -> str:
    """``text`` with each ``{{name}}`` replaced by ``str(values[name])``, in one pass: what a value holds is
    never read as a placeholder. A placeholder without a value, or a value without a placeholder, is refused."""
    found = set(PLACEHOLDER.findall(text))
    if found != set(values):
        raise OneByOneError(f"a page template's placeholders {sorted(found)} differ from the values given "
                            f"{sorted(values)}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def script(js: str) -> str:
    """JavaScript inlined in a page."""
    return f"<script>\n{js}\n</script>"


class Raw(str):
    """A string of HTML that ``esc`` (and so ``table``) passes through unescaped."""


def esc(value) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def badge(passed: bool) -> Raw:
    return Raw(f'<span class="badge {"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</span>')


def table(head, rows, numeric=(), row_class=None) -> str:
    """An HTML table; ``numeric`` are the column indices to right-align; cells are escaped."""
    cls = lambda i: ' class="num"' if i in numeric else ""  # noqa: E731
    out = [
        "<table><thead><tr>"
        + "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(head))
        + "</tr></thead><tbody>"
    ]
    for k, row in enumerate(rows):
        rc = f' class="{row_class(k)}"' if row_class and row_class(k) else ""
        out.append(f"<tr{rc}>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    return "\n".join(out + ["</tbody></table>"])


def figure(src: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{esc(src)}" alt="{esc(alt)}" loading="eager">{cap}</figure>'


def document(title: str, header: str, body: str) -> str:
    """A whole page: ``header`` and ``body`` are HTML; the calculator and the convention close it."""
    return fill(template("page.html"), title=esc(title), css=template("page.css"), conv_cost=template("conv_cost.js"),
                header=header, body=body, calculator=template("calculator.html"),
                calculator_js=template("calculator.js"), convention=esc(CONVENTION)) + "\n"


MARK = ".onebyone-page"  # in a page's folder: onebyone wrote index.html and figures/ there, and may again


def check_page_folder(folder, flag: str = "--html") -> Path:
    """``folder`` if a page may be written there (see ``claim``) and its parent is writable, checked without
    writing anything (``flag`` names the option in the messages)."""
    from .checks import check_writable

    folder = Path(check_writable(folder, flag))
    if folder.exists() and not folder.is_dir():
        raise OneByOneError(f"the page folder {folder} is a file; expected a folder (new, empty, or a page's)")
    if folder.is_dir() and not (folder / MARK).is_file() and any(folder.iterdir()):
        raise OneByOneError(f"{folder} is not empty and holds no page written by onebyone: choose a new or empty "
                            "folder (a page writes index.html and figures/, never over files of yours)")
    return folder


def claim(folder) -> Path:
    """The folder a page is written into, made ready: new, empty, or one a page was written into before (its
    ``MARK``). A folder holding anything else is refused before anything is written: a page never replaces a
    file of the user's (an ``index.html`` of theirs)."""
    folder = check_page_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _mark(folder, _listed(folder))  # (the figures the page before wrote stay listed until this one is written)
    return folder


def write(folder, text: str) -> Path:
    """``folder/index.html`` holding ``text``; then the figures the page before listed in ``MARK`` that this
    one does not show are removed (written by onebyone, and only those), and this page's are listed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.html"
    path.write_text(text, encoding="utf-8")
    shown = sorted(set(re.findall(r'src="(figures/[^"/]+\.png)"', text)))
    for old in sorted(set(_listed(folder)) - set(shown)):
        if (folder / old).is_file() and not (folder / old).is_symlink():
            (folder / old).unlink()
    _mark(folder, shown)
    return path


def _listed(folder: Path) -> list:
    """The figures ``MARK`` lists as written by the page in ``folder`` (none where there is no mark)."""
    try:
        lines = (folder / MARK).read_text().splitlines()
    except OSError:
        return []
    return [line for line in lines[1:] if re.fullmatch(r"figures/[^/]+\.png", line)]


def _mark(folder: Path, figures: list) -> None:
    (folder / MARK).write_text("index.html and figures/ in this folder were written by onebyone; the figures of "
                               "the page now there:\n" + "".join(f"{f}\n" for f in figures))
