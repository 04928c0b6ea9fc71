#!/usr/bin/env python3
"""No circle between modules: fail when sibling modules (files or folders under one parent)
import each other, directly or around a loop.

For every crate of the workspace, each path a module names (outside its tests) is resolved to
the module that owns the item, and becomes an edge between the two siblings where the
importing module's path and the owner's path part (`fs::write::spool` ->
`fs::write::uploader::X` is an edge spool -> uploader under `fs::write`). Resolution follows:
- `crate::` / `super::` / `self::` paths, in `use` trees (braces, `as`, `self`) and inline;
- re-exports: `super::X` where the parent did `use uploader::X` (or `pub use`) is an edge to
  `uploader`, not to the parent;
- globs: `use super::*` (or `use crate::a::*`, `use self::b::*`) makes every name of that
  module's namespace usable unqualified, so each identifier the importing module uses (not
  preceded by `.` or `::`, not defined in the module itself) that the glob's module imported from
  elsewhere is an edge to where it comes from; a child module reached through a glob counts when
  it is followed by `::`. Globs inside the glob's module are followed too.
A module using its parent's own items (`use super::*` for the parent's `lock` or error type) is
a child -> parent edge, not one between siblings, and is allowed: a parent and its children are
one unit, the parent declares and knows them. A cycle among the siblings of any parent is
reported with the lines that make it. Test-only code is skipped: files declared under
`#[cfg(test)]`, and everything from a `#[cfg(test)]` inline module on. Re-exports of other
crates (`crate::api` in vagonfs-fs, ...) are leaves.

Usage: .ci/module-cycles.py [REPO_ROOT] [--edges]   (exit 1 when a circle is found; --edges
prints every sibling edge found)
"""
import os
import re
import sys
from collections import defaultdict

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SHOW_EDGES = "--edges" in sys.argv[1:]
ROOT = os.path.abspath(ARGS[0] if ARGS else os.path.join(os.path.dirname(__file__), ".."))

CRATES = {
    # crate src dir: names at the crate root that are other crates (leaves) or the crate itself
    "src": {"external": {"api", "emulator", "fs", "fuse"}, "self": set()},
    "crates/vagonfs-api/src": {"external": set(), "self": {"api"}},
    "crates/vagonfs-emulator/src": {"external": {"api"}, "self": {"emulator"}},
    "crates/vagonfs-fs/src": {"external": {"api", "emulator", "config"}, "self": set()},
}

MOD_DECL = re.compile(r"^\s*(#\[cfg\(test\)\]\s*)?(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*;", re.M)
TEST_MOD = re.compile(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", re.M)
PATH = re.compile(r"\b(crate|super)((?:::\w+)+|::\{)")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] if not line.lstrip().startswith("//") else "" for line in text.split("\n"))


STRING = re.compile(r'r#+".*?"#+|r"[^"]*"|"(?:\\.|[^"\\])*"', re.S)
ITEM = re.compile(r"\b(?:fn|struct|enum|trait|type|const|static|union|mod)\s+(\w+)|\bmacro_rules!\s*(\w+)")
IDENT = re.compile(r"[A-Za-z_]\w*")


def clean(text):
    """Text of a module without its tests, comments and string literals."""
    cut = TEST_MOD.search(text)
    if cut:
        text = text[: cut.start()]
    return STRING.sub('""', strip_comments(text))


def top_items(text):
    """Names of the items a module defines at its top level (not methods in `impl` blocks, not
    locals in function bodies)."""
    depth, names = 0, set()
    level = []
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "\n":
            level.append((i, depth))
    starts = [0] + [i + 1 for i, _ in level]
    depths = [0] + [d for _, d in level]
    for start, d in zip(starts, depths):
        if d != 0:
            continue
        line = text[start: text.find("\n", start) if text.find("\n", start) >= 0 else len(text)]
        m = ITEM.search(line)
        if m:
            names.add(m.group(1) or m.group(2))
    return names


def use_trees(text):
    """Every `use` of `text` as (segments, name): name is what the use brings into scope (the
    last segment, its `as` alias, or `*` for a glob; `None` for `as _`)."""
    out = []
    for m in re.finditer(r"\buse\s+", text):
        end = text.find(";", m.end())
        if end < 0:
            continue

        def walk(prefix, s):
            depth, parts, cur = 0, [], ""
            for ch in s.strip():
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    parts.append(cur)
                    cur = ""
                else:
                    cur += ch
            parts.append(cur)
            for p in parts:
                p = p.strip()
                if not p:
                    continue
                if "{" in p:
                    head, rest = p.split("{", 1)
                    walk(prefix + [x for x in head.strip().rstrip(":").split("::") if x], rest.rsplit("}", 1)[0])
                    continue
                alias = None
                if " as " in p:
                    p, alias = (x.strip() for x in p.split(" as ", 1))
                segs = [x.strip() for x in p.split("::") if x.strip()]
                if segs == ["self"]:  # `a::b::{self}`
                    segs = []
                full = prefix + segs
                if not full:
                    continue
                name = alias if alias is not None else full[-1]
                out.append((full, None if name == "_" else name))

        walk([], text[m.end():end])
    return out


def modules(src):
    """module path (tuple) -> file, following `mod x;` declarations, skipping cfg(test) ones."""
    found = {}

    def visit(path, file):
        found[path] = file
        text = open(file).read()
        cut = TEST_MOD.search(text)
        if cut:
            text = text[: cut.start()]
        base = os.path.dirname(file)
        if not (file.endswith("mod.rs") or file.endswith("lib.rs") or file.endswith("main.rs")):
            base = os.path.join(base, os.path.basename(file)[:-3])
        for m in MOD_DECL.finditer(text):
            if m.group(1):
                continue
            name = m.group(4)
            for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                if os.path.exists(cand):
                    visit(path + (name,), cand)
                    break

    visit((), os.path.join(src, "lib.rs"))
    return found



class Crate:
    def __init__(self, mods, cfg):
        self.mods = mods  # module path (tuple) -> file
        self.cfg = cfg
        self.text = {p: clean(open(f).read()) for p, f in mods.items()}
        self.uses = {p: use_trees(t) for p, t in self.text.items()}
        self.own = {p: top_items(t) for p, t in self.text.items()}

    def absolute(self, module, segs):
        """`segs` as named in `module`, made absolute (a list from the crate root), or None
        when it is outside the crate (std, another crate)."""
        if not segs:
            return None
        if segs[0] == "crate":
            out = list(segs[1:])
        elif segs[0] in ("super", "self"):
            base = list(module)
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
            out = base + list(segs)
        elif tuple(module) + (segs[0],) in self.mods:
            out = list(module) + list(segs)  # a child module, 2018 style
        else:
            return None
        if out and out[0] in self.cfg["self"]:
            out = out[1:]
        return out

    def owner(self, path, seen=None):
        """The module that owns the item `path` names (a tuple), following re-exports and
        globs; a path into another crate of the workspace stops at that crate's name."""
        seen = set() if seen is None else seen
        if path and path[0] in self.cfg["external"]:
            return tuple(path[:1])
        i = 0
        while i < len(path) and tuple(path[: i + 1]) in self.mods:
            i += 1
        module = tuple(path[:i])
        if i == len(path) or path[i] == "*":
            return module
        found = self.lookup(module, path[i], seen)
        if found is None:
            return module
        return self.owner(list(found) + list(path[i + 1:]), seen)

    def lookup(self, module, name, seen):
        """Where `name`, as seen from inside `module`, comes from (an absolute path), or None
        when it is the module's own item (or unknown)."""
        key = (module, name)
        if key in seen:
            return None
        seen.add(key)
        if name in self.own.get(module, ()) and module + (name,) not in self.mods:
            return None
        for segs, alias in self.uses.get(module, ()):
            if alias == name:
                target = self.absolute(module, segs)
                return target
        for segs, alias in self.uses.get(module, ()):
            if alias == "*":
                source = self.absolute(module, segs[:-1])
                if source is None:
                    continue
                src = self.owner(source, seen)
                if src + (name,) in self.mods:
                    return list(src) + [name]
                if src and src[0] in self.cfg["external"]:
                    continue
                inner = self.lookup(src, name, seen)
                if inner is not None:
                    return inner
                if name in self.own.get(src, ()):
                    return list(src) + [name]
        return None

    def targets(self, path):
        """Every owner module `path`'s code names (with the name that led there)."""
        text = self.text[path]
        out = []
        for segs, name in self.uses[path]:
            if name == "*":
                continue
            abs_path = self.absolute(path, segs)
            if abs_path is not None:
                out.append(self.owner(abs_path))
        for m in PATH.finditer(text):
            if re.search(r"\buse\s*[^;]*$", text[max(0, m.start() - 200): m.start()]):
                continue  # inside a use tree, done above
            segs = [m.group(1)] + [x for x in m.group(2).split("::") if x and x != "{"]
            abs_path = self.absolute(path, segs)
            if abs_path is not None:
                out.append(self.owner(abs_path))
        # Names brought in by globs.
        globs = []
        for segs, name in self.uses[path]:
            if name == "*":
                source = self.absolute(path, segs[:-1])
                if source is not None:
                    globs.append(self.owner(source))
                    out.append(globs[-1])  # the glob names its module
        if globs:
            local = self.own[path] | {n for _, n in self.uses[path] if n}
            for m in IDENT.finditer(text):
                ident = m.group(0)
                if ident in local:
                    continue
                before = text[max(0, m.start() - 2): m.start()]
                if before.endswith(".") or before.endswith("::") or (m.start() > 0 and text[m.start() - 1].isalnum()):
                    continue
                path_follows = text[m.end(): m.end() + 2] == "::"
                for g in globs:
                    if g and g[0] in self.cfg["external"]:
                        continue
                    if g + (ident,) in self.mods:
                        if path_follows:
                            out.append(g + (ident,))
                        continue
                    found = self.lookup(g, ident, set())
                    if found is not None:
                        out.append(self.owner(found))
                    elif ident in self.own.get(g, ()):
                        out.append(g)
        return out


def edges_of(mods, cfg):
    crate = Crate(mods, cfg)
    edges = defaultdict(list)  # (parent, a, b) -> [where]
    for path, file in mods.items():
        for owner in crate.targets(path):
            # the common prefix, then the two siblings
            i = 0
            while i < len(path) and i < len(owner) and path[i] == owner[i]:
                i += 1
            if i < len(path) and i < len(owner):
                edges[(tuple(path[:i]), path[i], owner[i])].append(os.path.relpath(file, ROOT))
    return edges


def cycles(edges):
    graph = defaultdict(lambda: defaultdict(set))
    for (parent, a, b), where in edges.items():
        graph[parent][a].add(b)
    found = []
    for parent, g in graph.items():
        # Tarjan's strongly connected components
        index, low, stack, on, idx, sccs = {}, {}, [], set(), [0], []

        def strong(v):
            index[v] = low[v] = idx[0]
            idx[0] += 1
            stack.append(v)
            on.add(v)
            for w in g.get(v, ()):
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))

        for v in list(g):
            if v not in index:
                strong(v)
        for comp in sccs:
            found.append((parent, comp))
    return found


def main():
    bad = 0
    for src, cfg in CRATES.items():
        full = os.path.join(ROOT, src)
        if not os.path.isdir(full):
            continue
        edges = edges_of(modules(full), cfg)
        if SHOW_EDGES:
            for (p, a, b), files in sorted(edges.items()):
                print(f"{src}: {'::'.join(p) or '(root)'}: {a} -> {b}  ({', '.join(sorted(set(files)))})")
        for parent, comp in cycles(edges):
            bad += 1
            where = "::".join(parent) or "(crate root)"
            print(f"circle in {src} under {where}: {' <-> '.join(comp)}")
            for (p, a, b), files in sorted(edges.items()):
                if p == parent and a in comp and b in comp:
                    print(f"  {a} -> {b}  ({', '.join(sorted(set(files)))})")
    if bad:
        print(f"{bad} circle(s) between modules; see docs/ARCHITECTURE.md (observer traits)")
        sys.exit(1)
    print("no circle between modules")


if __name__ == "__main__":
    main()
