"""A griffe extension: the reStructuredText of the app's docstrings, as Markdown for mkdocstrings.

The docstrings are written for reading in an editor and in ``help()``: Sphinx roles
(``:class:`~hsq_refunds.models.Refund```), ``::`` literal blocks, simple tables, underlined
section titles and definition lists. mkdocstrings renders Markdown, so before rendering:

- a role becomes a link to the object's entry in the API reference. A target under one of the
  ``documented`` modules must be there (a required reference: a typo or a removed object fails
  the strict build); any other object of the project gets a link where the reference has one,
  plain code otherwise. A builtin (``ValueError``), an object imported from another package
  (``Decimal``) or a bare name that several objects have (``:meth:`reset```) is plain code. A
  target that names no object at all is reported as a warning, which fails the strict build.
- ``text::`` and its indented block become ``text:`` and a fenced code block;
- a simple table (``==== ====`` borders) becomes a Markdown table;
- a title underlined with ``---`` becomes a bold line (it is not a heading of the page);
- a term followed by its indented definition becomes a Markdown definition list.

The docstrings themselves are not changed; only what griffe hands to mkdocstrings.
"""

from __future__ import annotations

import builtins
import html
import logging
import re
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import griffe

logger = logging.getLogger("mkdocs.plugins.hsq_refunds.griffe_rst")

ROLE = re.compile(r":(?P<role>class|func|meth|mod|data|attr|exc|obj|const):`(?P<target>[^`]+)`")
TABLE_BORDER = re.compile(r"^(?P<indent> *)=+( +=+)+ *$")
UNDERLINE = re.compile(r"^ *([-=~^])\1{2,} *$")
LIST_ITEM = re.compile(r"^ *([-*+]|\d+\.) ")


class RestToMarkdown(griffe.Extension):
    """Rewrites every docstring of a package once it is loaded (see the module's docstring)."""

    def __init__(self, documented: Sequence[str] = ()) -> None:
        super().__init__()
        self.documented = tuple(documented)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self.convert(obj.docstring.value, obj, loader)

    def convert(self, text: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
        text = ROLE.sub(lambda match: self.role(match, obj, loader), text)
        lines = text.splitlines()
        lines = _literal_blocks(lines)
        lines = _tables(lines)
        lines = _titles(lines)
        lines = _definitions(lines)
        return "\n".join(lines)

    def role(self, match: re.Match[str], obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
        titled = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>", match["target"], re.DOTALL)
        written = re.sub(r"\s+", "", titled["target"] if titled else match["target"])
        target = written.lstrip("~")
        if titled:
            shown = " ".join(titled["title"].split())
        else:
            shown = target.rsplit(".", 1)[-1] if written.startswith("~") else target.lstrip(".")
            if match["role"] in {"func", "meth"}:
                shown += "()"
        code = f"<code>{html.escape(shown)}</code>"
        kind, path = _resolve(target, obj, loader)
        if path is None:
            if kind == MISSING and target.split(".")[0] not in vars(builtins):
                logger.warning(
                    "%s: the docstring names %s, which is no object griffe knows",
                    obj.path,
                    match[0],
                )
            return code
        public = not any(part.startswith("_") for part in path.split("."))
        required = public and any(path.startswith(f"{name}.") for name in self.documented)
        optional = "" if required else " optional"
        return f'<autoref identifier="{path}"{optional}>{code}</autoref>'


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


#: What :func:`_lookup` found: an object of the project, one imported from elsewhere, or nothing.
FOUND, EXTERNAL, MISSING = "found", "external", "missing"


def _lookup(path: str, loader: griffe.GriffeLoader) -> tuple[str, str | None]:
    """Whether the loaded packages hold an object at ``path``, and its canonical path."""
    try:
        found = loader.modules_collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError):
        return MISSING, None
    try:
        return FOUND, found.final_target.path if found.is_alias else found.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return EXTERNAL, None  # imported from outside the project


def _by_name(pkg: griffe.Object, name: str) -> list[str]:
    """The paths of every object of the package whose own name is ``name``."""
    return [obj.path for obj in _walk(pkg) if obj.name == name]


def _resolve(
    target: str, obj: griffe.Object, loader: griffe.GriffeLoader
) -> tuple[str, str | None]:
    """Where ``target``, written in the docstring of ``obj``, leads: as Sphinx would look for it,
    relative to the module (``.name``), then in each enclosing scope, then as a full path, then
    as the one object of the package with that name (``RefundQuerySet``, ``HsqClient.call``)."""
    if target.startswith("."):
        module = obj.module
        package: griffe.Object | None = module if module.is_init_module else module.parent
        rest = target[1:]
        while rest.startswith(".") and package is not None:
            package, rest = package.parent, rest[1:]
        return (MISSING, None) if package is None else _lookup(f"{package.path}.{rest}", loader)
    scope: griffe.Object | None = obj
    while scope is not None:
        kind, path = _lookup(f"{scope.path}.{target}", loader)
        if kind != MISSING:
            return kind, path
        scope = scope.parent
    kind, path = _lookup(target, loader)
    if kind != MISSING:
        return kind, path
    head, _, tail = target.partition(".")
    matches = _by_name(obj.package, head)
    if len(matches) == 1:
        return _lookup(f"{matches[0]}.{tail}" if tail else matches[0], loader)
    return (EXTERNAL, None) if matches else (MISSING, None)  # several: not a typo, no link


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, deeper_than: int) -> int:
    """The end of the block of lines from ``start`` indented more than ``deeper_than``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > deeper_than):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def _language(code: str) -> str:
    first = code.lstrip()
    if first.startswith(("{", "[")):
        return "json"
    if first.startswith(("python ", "pip ", "manage.py", "./manage.py", "$ ")):
        return "sh"
    return "python"


def _literal_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        head = line.rstrip()[:-2].rstrip()
        base = _indent(line)
        if head.strip():
            out.append(head + ":")
        start = i + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        end = _block(lines, start, base)
        code = textwrap.dedent("\n".join(lines[start:end]))
        prefix = " " * base
        out += ["", f"{prefix}```{_language(code)}"]
        out += [prefix + row if row else "" for row in code.splitlines()]
        out += [f"{prefix}```", ""]
        i = end
    return out


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = TABLE_BORDER.match(lines[i])
        if border is None:
            out.append(lines[i])
            i += 1
            continue
        spans = [match.span() for match in re.finditer(r"=+", lines[i])]
        rows: list[list[str]] = []
        borders = 1
        i += 1
        while i < len(lines) and borders < 3:
            line = lines[i]
            if TABLE_BORDER.match(line):
                borders += 1
                i += 1
                if i >= len(lines) or not lines[i].strip():
                    break
                continue
            if not line.strip():
                break
            cells = [
                line[a : (b if k < len(spans) - 1 else None)].strip()
                for k, (a, b) in enumerate(spans)
            ]
            if rows and not cells[0]:
                for k, cell in enumerate(cells):
                    if cell:
                        rows[-1][k] = f"{rows[-1][k]} {cell}".strip()
            else:
                rows.append(cells)
            i += 1
        indent = border["indent"]
        out.append(indent + "|" + " |" * len(spans))
        out.append(indent + "|" + "---|" * len(spans))
        out += [
            indent + "| " + " | ".join(cell.replace("|", r"\|") for cell in row) + " |"
            for row in rows
        ]
    return out


def _titles(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        previous = out[-1] if out else ""
        if (
            UNDERLINE.match(line)
            and previous.strip()
            and not previous.lstrip().startswith("|")
            and len(line.strip()) >= len(previous.strip())
        ):
            out[-1] = f"{' ' * _indent(previous)}**{previous.strip()}**"
            out.append("")  # what follows (a list, often) starts a block of its own
            continue
        out.append(line)
    return out


def _definitions(lines: list[str]) -> list[str]:
    out: list[str] = []
    fenced = False
    listing = False  # within a definition list: its next term needs no blank line before it
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if (
            not fenced
            and line.strip()
            and _indent(line) == 0
            and not LIST_ITEM.match(line)
            and not line.startswith("|")
            and (listing or i == 0 or not lines[i - 1].strip())
            and following.strip()
            and _indent(following) >= 4
        ):
            end = _block(lines, i + 1, 0)
            body = textwrap.dedent("\n".join(lines[i + 1 : end])).splitlines()
            out.append(line)
            out.append(":   " + body[0])
            out += ["    " + row if row else "" for row in body[1:]]
            out.append("")
            listing = True
            i = end
            continue
        listing = listing and not line.strip()
        out.append(line)
        i += 1
    return out
