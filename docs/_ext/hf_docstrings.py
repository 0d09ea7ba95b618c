# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A griffe extension that lets mkdocstrings' Google-style parser read the package's TRL-style docstrings.

The package writes docstrings as TRL does (for Hugging Face's doc-builder), which differ from Google style in three
ways; each is rewritten before griffe parses the docstring, so the source keeps TRL's conventions:

- Config classes list their fields in groups, each opened by a `> Parameters that control ...` line, with the entries
  at the docstring's own indentation. Each group becomes its title (bold) and an `Args:` section.
- An entry's type carries `*optional*` and `defaults to ...` (``presafety_loss_weight (`float`, *optional*, defaults
  to `1.0`):``); the type becomes `float`, since mkdocstrings reads the default from the signature.
- ``[`Name`]`` and ``[`~module.Name`]`` are cross-references: they become links to the object's entry in the API
  reference when the name resolves to an object of the package that a page documents, and plain code otherwise (TRL's
  classes, helpers no page shows), without a warning.
"""

import re

import griffe


GROUP_TITLE = re.compile(r"^> (?P<title>\S.*)$")
# `name (`type`, *optional*, defaults to `value`): description`; the backtick in the type tells it from prose
ENTRY = re.compile(r"^(?P<indent>\s*)(?P<name>\*{0,2}[A-Za-z_]\w*) \((?P<type>[^()]*`[^()]*)\):(?P<rest>.*)$")
CROSS_REFERENCE = re.compile(r"\[`(?P<tilde>~?)(?P<path>[A-Za-z_][\w.]*)`\](?![(\[])")


def clean_type(text: str) -> str:
    """`` `float`, *optional*, defaults to `1.0` `` -> `float`; `` `str` or `list[str]` `` -> `str | list[str]`."""
    text = re.split(r",\s*(?:\*optional\*|defaults to\b)", text, maxsplit=1)[0]
    text = re.sub(r"\s*\*optional\*\s*", "", text)
    return text.replace("`", "").replace(" or ", " | ").strip(" ,")


def _entry(match: re.Match, indent: str) -> str:
    kind = clean_type(match["type"])
    rest = match["rest"].rstrip()
    return f"{indent}{match['name']} ({kind}):{rest}" if kind else f"{indent}{match['name']}:{rest}"


def convert_groups(text: str) -> str:
    """TRL's `> Title` field groups -> a bold title and a Google `Args:` section each; other lines keep their place,
    entries elsewhere (in `Args:` sections) get their type cleaned."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        title = GROUP_TITLE.match(lines[i])
        if title is None:
            entry = ENTRY.match(lines[i])
            out.append(_entry(entry, entry["indent"]) if entry else lines[i])
            i += 1
            continue
        # A group: its entries start at column 0, their continuations are indented; it ends at a line at column 0
        # that opens no entry (after a blank line), or at the next group. A group of prose keeps only its title.
        out += [f"**{title['title'].strip()}**", ""]
        i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        if not _opens_entry(lines[i] if i < len(lines) else ""):
            continue
        out.append("Args:")
        while i < len(lines):
            line = lines[i]
            if _opens_entry(line):
                out.append(_entry(ENTRY.match(line), "    "))
            elif line.startswith((" ", "\t")):
                out.append("        " + line.strip())
            elif line.strip() or not _opens_entry(next((later for later in lines[i + 1 :] if later.strip()), "")):
                break  # blank lines between entries are dropped; the group ends at anything else
            i += 1
    return "\n".join(out)


def _opens_entry(line: str) -> bool:
    return ENTRY.match(line) is not None and not line.startswith((" ", "\t"))


class HFDocstrings(griffe.Extension):
    """Rewrites every docstring of the package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        names: dict[str, set[str]] = {}
        objects = list(_walk(pkg))
        for obj in objects:
            names.setdefault(obj.name, set()).add(obj.path)
        for obj in objects:
            if obj.docstring is not None:
                text = convert_groups(obj.docstring.value)
                obj.docstring.value = CROSS_REFERENCE.sub(lambda m, o=obj: _reference(m, o, names), text)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _reference(match: re.Match, obj: griffe.Object, names: dict[str, set[str]]) -> str:
    path = match["path"]
    title = path.rsplit(".", 1)[-1] if match["tilde"] else path
    head, _, tail = path.partition(".")
    try:
        target = obj.resolve(head) + (f".{tail}" if tail else "")
    except griffe.NameResolutionError:
        candidates = names.get(path.rsplit(".", 1)[-1], set())
        target = next(iter(candidates)) if len(candidates) == 1 and "." not in path else None
    root = obj.path.split(".", 1)[0]
    if target is None or not target.startswith(root + "."):
        return f"`{title}`"
    # `optional`: autorefs links it when a page documents the target, and leaves the code text otherwise
    return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'
