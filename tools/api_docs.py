"""Writes docs/api.md, the API reference, from the docstrings of the public surface.

The public surface: every name in `tfreg.__all__`; every module among them
(`tfreg.priors`, `tfreg.validation`, ...) with the names in its `__all__`; and
every other public subpackage of `tfreg` (a directory with an `__init__.py`
whose name does not start with "_"; not the `cli` application) with its
`__all__`. Each name gets its kind, its signature and its own docstring
(classes: also the public methods and properties they define). Nothing is
read from Keras, so the document is the same under both Keras generations.

    python tools/api_docs.py           # rewrites docs/api.md
    python tools/api_docs.py --check   # exits 1 when docs/api.md is stale
"""

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "docs", "api.md")
# Subpackages that are applications, not library.
NOT_LIBRARY = ("cli",)


def _own_doc(obj):
    """The docstring `obj` defines itself (never a base class's)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(
        obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc else ""


def _signature(obj):
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    # Defaults that are objects print with their address.
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def _repr(value):
    """repr, with sets sorted (their order changes between processes)."""
    if isinstance(value, (set, frozenset)):
        items = ", ".join(repr(item) for item in sorted(value, key=repr))
        return f"{type(value).__name__}({{{items}}})"
    return repr(value)


def _kind(obj):
    if inspect.ismodule(obj):
        return "package" if hasattr(obj, "__path__") else "module"
    if isinstance(obj, type):
        return "class"
    if callable(obj):
        return "function"
    return "constant"


def _members(cls):
    """(name, object) of the public methods and properties `cls` defines."""
    for name, member in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property) or inspect.isfunction(member):
            if _own_doc(member if not isinstance(member, property)
                        else member.fget or member):
                yield name, member


def _document(prefix, name, obj):
    qualified = f"{prefix}.{name}"
    kind = _kind(obj)
    lines = []
    if kind in ("class", "function"):
        lines.append(f"### `{qualified}{_signature(obj)}`")
    elif kind == "constant":
        lines.append(f"### `{qualified}`")
    else:
        lines.append(f"### `{qualified}` ({kind})")
    lines.append("")
    lines.append(f"*{kind}*")
    lines.append("")
    if kind == "constant":
        lines += ["```python", f"{qualified} = {_repr(obj)}", "```", ""]
        return lines
    doc = _own_doc(obj)
    if kind in ("module", "package"):
        doc = doc.split("\n\n")[0]
        public = getattr(obj, "__all__", None)
        if public:
            doc += f"\n\nSee the `{qualified}` section below."
    if doc:
        lines += [_fenced(doc), ""]
    if kind == "class":
        for member_name, member in _members(obj):
            if isinstance(member, property):
                lines.append(f"#### `{qualified}.{member_name}` (property)")
                member_doc = _own_doc(member.fget or member)
            else:
                lines.append(
                    f"#### `{qualified}.{member_name}{_signature(member)}`")
                member_doc = _own_doc(member)
            lines += ["", _fenced(member_doc), ""]
    return lines


def _fenced(doc):
    """Docstrings are plain text with ASCII math: keep them verbatim."""
    return "```text\n" + doc + "\n```"


def modules():
    """(qualified name, module) of every documented namespace, in order: the
    public surface (`tests/public_api_test.py` checks each `__all__`)."""
    import tfreg

    seen, out = set(), []

    def add(qualified, module):
        if qualified not in seen:
            seen.add(qualified)
            out.append((qualified, module))

    add("tfreg", tfreg)
    for name in tfreg.__all__:
        value = getattr(tfreg, name)
        if inspect.ismodule(value) and getattr(value, "__all__", None):
            add(f"tfreg.{name}", value)
    for info in sorted(pkgutil.iter_modules(tfreg.__path__),
                       key=lambda info: info.name):
        if (info.ispkg and not info.name.startswith("_")
                and info.name not in NOT_LIBRARY):
            module = importlib.import_module(f"tfreg.{info.name}")
            if getattr(module, "__all__", None):
                add(f"tfreg.{info.name}", module)
    return out


def render():
    """The text of docs/api.md."""
    documented = modules()
    lines = [
        "# API reference", "",
        "Generated by `python tools/api_docs.py` from the docstrings of the "
        "public surface (`__all__` of `tfreg` and of its public modules and "
        "subpackages); `tests/api_docs_test.py` fails when this file is "
        "stale. Do not edit by hand.", "",
        "Contents:", ""]
    lines += [f"- [`{qualified}`](#{qualified.replace('.', '')})"
              for qualified, _ in documented]
    lines.append("")
    for qualified, module in documented:
        lines += [f"## {qualified}", ""]
        summary = _own_doc(module).split("\n\n")[0]
        if summary:
            lines += [summary, ""]
        for name in sorted(module.__all__, key=lambda n: (n.lower(), n)):
            lines += _document(qualified, name, getattr(module, name))
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when docs/api.md differs from the "
                             "docstrings instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(OUTPUT, encoding="utf-8") as f:
            current = f.read()
        if current != text:
            print(f"{OUTPUT} is stale: run python tools/api_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)  # The tfreg of this checkout.
    sys.exit(main())
