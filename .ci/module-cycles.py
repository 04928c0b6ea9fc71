#!/usr/bin/env python3
"""No circle between modules: fail when sibling modules (files or folders under one parent)
import each other, directly or around a loop.

For every crate of the workspace, each `crate::a::b::…` / `super::…` path named in a module
(outside its tests) is an edge between the two siblings where the importing module's path and
the imported path part (`fs::write::spool` -> `fs::write::uploader::X` is an edge
spool -> uploader under `fs::write`). A cycle among the siblings of any parent is reported with
the lines that make it. Test-only code is skipped: files declared under `#[cfg(test)]`, and
everything from a `#[cfg(test)]` inline module on. Re-exports of other crates (`crate::api`
in vagonfs-fs, ...) are leaves.

Usage: .ci/module-cycles.py [REPO_ROOT]   (exit 1 when a circle is found)
"""
import os
import re
import sys
from collections import defaultdict

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))

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


def expand_use(text, start):
    """The paths of a `use` tree beginning at `start` (handles nested braces)."""
    end = text.find(";", start)
    tree = text[start:end]
    out = []

    def walk(prefix, s):
        s = s.strip()
        depth = 0
        parts, cur = [], ""
        for ch in s:
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
            else:
                p = p.split(" as ")[0].strip()
                out.append(prefix + [x for x in p.split("::") if x])

    walk([], tree)
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


def edges_of(mods, cfg):
    edges = defaultdict(list)  # (parent, a, b) -> [where]
    for path, file in mods.items():
        text = open(file).read()
        cut = TEST_MOD.search(text)
        if cut:
            text = text[: cut.start()]
        text = strip_comments(text)
        # module path of the file's own items; `super` is relative to it
        targets = []
        for m in re.finditer(r"\buse\s+", text):
            for p in expand_use(text, m.end()):
                targets.append(p)
        for m in PATH.finditer(text):
            if text[max(0, m.start() - 40): m.start()].rstrip().endswith("use"):
                continue
            targets.append([m.group(1)] + [x for x in m.group(2).split("::") if x and x != "{"])
        for t in targets:
            if not t:
                continue
            if t[0] == "crate":
                abs_path = t[1:]
            elif t[0] == "super":
                base = list(path)
                while t and t[0] == "super":
                    base = base[:-1]
                    t = t[1:]
                abs_path = base + t
            elif t[0] == "self":
                abs_path = list(path) + t[1:]
            else:
                continue
            if abs_path and abs_path[0] in cfg["self"]:
                abs_path = abs_path[1:]
            if abs_path and abs_path[0] in cfg["external"]:
                abs_path = abs_path[:1]
            # the common prefix, then the two siblings
            i = 0
            while i < len(path) and i < len(abs_path) and path[i] == abs_path[i]:
                i += 1
            if i < len(path) and i < len(abs_path):
                a, b = path[i], abs_path[i]
                if tuple(abs_path[: i + 1]) not in mods and abs_path[0] not in cfg["external"]:
                    continue  # an item of the parent, not a module
                edges[(tuple(path[:i]), a, b)].append(os.path.relpath(file, ROOT))
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
