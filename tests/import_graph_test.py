"""tfreg's modules import each other one way: no circle, read from the source.

Every import counts, at module level or inside a function. `import tfreg`
(the package, which imports the whole library) is left out: the command line
uses it as an application does.
"""

import ast
import os

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_names():
    """{module name: file} of every module of the tfreg package."""
    found = {}
    for directory, _, files in os.walk(os.path.join(ROOT, "tfreg")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
    return found


def import_graph():
    """{module: set of the tfreg modules it imports}."""
    modules = _module_names()
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from tfreg import walk` imports tfreg.walk itself.
                imported.update(
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in modules
                    else node.module for alias in node.names)
        graph[module] = {name for name in imported
                         if name in modules and name not in ("tfreg", module)}
    return graph


def cycles(graph):
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


class ImportGraphTest(absltest.TestCase):

    def test_no_circle(self):
        graph = import_graph()
        self.assertContainsSubset(["tfreg.walk", "tfreg._coverage"], graph)
        self.assertEqual(cycles(graph), [])

    def test_one_way_between_neighbours(self):
        graph = import_graph()
        self.assertEqual(graph["tfreg._checks"], set())
        self.assertEqual(graph["tfreg.strength"], {"tfreg._checks"})
        self.assertIn("tfreg.strength", graph["tfreg.validation"])
        self.assertIn("tfreg.walk", graph["tfreg._coverage"])
        self.assertNotIn("tfreg._coverage", graph["tfreg.walk"])

    def test_a_circle_is_found(self):
        circle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(cycles(circle), [["a", "b", "c"]])
        self.assertEqual(cycles({"a": {"b"}, "b": set()}), [])


if __name__ == "__main__":
    absltest.main()
