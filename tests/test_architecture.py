"""The package's shape, read from its source: no import cycles, no upward imports, plugins
written against the plugin API only.

Every module under portal/ is parsed with `ast`; every import counts (absolute and relative,
at module level or inside a function), so a lazy import cannot hide a dependency. Imports
under `if TYPE_CHECKING:` count for the layers but not for cycles, as they never run; and as
importing `a.b.c` runs `a` and `a.b` first, the cycle check follows those packages too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOT_PACKAGE = "portal"
PLUGIN_API = "portal.plugins"
# Directories of plugin modules: the built-in ones (package reauth_plugins), the example plugin
# of docs/plugins.md, and examples/ should a plugin ever be kept there.
PLUGIN_DIRS = (ROOT / "plugins", ROOT / "tests" / "example_plugin", ROOT / "examples")

# The intended picture, lowest first: a module imports only modules of its own layer or a
# lower one, so views sit above the services, services above the models and storage. An
# entry covers the module of that name and, for a package other than `portal` itself, every
# module in it; the longest entry that covers a module gives its layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "portal.config",
            "portal.config_docs",
            "portal.settings",
            "portal.extensions",
            "portal.resources",
            "portal.signing",
            "portal.db",
            "portal.migrate",
            "portal.models",
            "portal.plugins",
            "portal.scopes",
            "portal.web",
            "portal.routing",
        ),
    ),
    ("outbox", ("portal.outbox",)),  # the queue and the worker loop, which is given its work
    ("nylas", ("portal.nylas",)),  # the only package that talks to Nylas
    ("accounts", ("portal.accounts", "portal.accounts.lifecycle")),
    ("mail", ("portal.mail",)),
    ("journey", ("portal.journey",)),  # the sign-in flow, its outcomes, reconciliation
    ("webhooks", ("portal.webhooks",)),
    ("views", ("portal.handlers", "portal.views", "portal.admin", "portal.api")),
    ("app factory", ("portal",)),
    ("demo and testing", ("portal.demo", "portal.testing")),
    ("cli", ("portal.cli",)),
)


@dataclass(frozen=True)
class Import:
    """One imported module, as the importing module's source names it."""

    target: str
    line: int
    type_checking_only: bool  # under `if TYPE_CHECKING:`: never run, so no cycle


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def discover(directory: Path, prefix: str | None) -> dict[str, Module]:
    """The modules under `directory`, named from `prefix` (None: each file is a top module)."""
    modules: dict[str, Module] = {}
    for path in sorted(directory.rglob("*.py")) if directory.is_dir() else ():
        parts = list(path.relative_to(directory).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(([prefix] if prefix else []) + parts)
        modules[name] = Module(name, path, is_package)
    return modules


PORTAL_MODULES = discover(ROOT / ROOT_PACKAGE, ROOT_PACKAGE)


def type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the statements under `if TYPE_CHECKING:`."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or 0) + 1))
    return lines


def known(name: str, modules: Mapping[str, Module]) -> str | None:
    """`name` or its nearest enclosing module among `modules` (an attribute names its module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: Module, modules: Mapping[str, Module]) -> list[Import]:
    """The modules of `modules` that `module` imports, anywhere in its source."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    guarded = type_checking_lines(tree)
    found: dict[tuple[str, int], Import] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.package.split(".")
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from package import submodule` imports the submodule; other names, the package.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for name in names:
            target = known(name, modules)
            if target is not None and target != module.name:
                found[target, node.lineno] = Import(target, node.lineno, node.lineno in guarded)
    return sorted(found.values(), key=lambda imported: (imported.line, imported.target))


def import_graph(modules: Mapping[str, Module]) -> dict[str, list[Import]]:
    return {name: imports_of(module, modules) for name, module in modules.items()}


def runtime_edges(graph: Mapping[str, list[Import]]) -> dict[str, set[str]]:
    """Who imports whom when the code runs: importing `a.b.c` also runs `a` and `a.b`.

    The packages enclosing the importer itself are left out: they are already being imported.
    """
    edges: dict[str, set[str]] = {}
    for name, imports in graph.items():
        targets: set[str] = set()
        for imported in imports:
            if imported.type_checking_only:
                continue
            parts = imported.target.split(".")
            for depth in range(1, len(parts) + 1):
                enclosing = ".".join(parts[:depth])
                inside = name == enclosing or name.startswith(enclosing + ".")
                if enclosing in graph and enclosing != name and not inside:
                    targets.add(enclosing)
        edges[name] = targets
    return edges


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(edges.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for node in sorted(edges):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest entry covering `module`; None when none does."""
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            nested = entry != ROOT_PACKAGE and module.startswith(entry + ".")
            if (module == entry or nested) and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def unplaced(modules: Iterable[str]) -> list[str]:
    return [
        f"{name} is in no layer of LAYERS (tests/test_architecture.py): add it to the layer "
        "it belongs to"
        for name in modules
        if layer_of(name) is None
    ]


def upward_imports(graph: Mapping[str, list[Import]]) -> Iterator[str]:
    for name, imports in sorted(graph.items()):
        own = layer_of(name)
        for imported in imports:
            theirs = layer_of(imported.target)
            if own is not None and theirs is not None and theirs > own:
                yield (
                    f"{PORTAL_MODULES[name].path.relative_to(ROOT)}:{imported.line}: {name} "
                    f"({LAYERS[own][0]}) imports {imported.target} ({LAYERS[theirs][0]})"
                )


# -- the tests ----------------------------------------------------------------------------------


def test_every_portal_module_has_a_layer() -> None:
    missing = unplaced(PORTAL_MODULES)
    assert not missing, "\n".join(missing)


def test_a_module_missing_from_the_table_is_named() -> None:
    (message,) = unplaced(["portal.brand_new", "portal.accounts.anything"])
    assert message.startswith("portal.brand_new is in no layer")


def test_no_module_imports_a_higher_layer() -> None:
    violations = list(upward_imports(import_graph(PORTAL_MODULES)))
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_no_import_cycle() -> None:
    cycle = find_cycle(runtime_edges(import_graph(PORTAL_MODULES)))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_reports_the_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"b"}, "d": set()}
    assert find_cycle(edges) == ["b", "c", "b"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_a_submodule_runs_its_package_first() -> None:
    graph = {
        "portal.x": [Import("portal.pkg.leaf", 1, False)],
        "portal.pkg": [Import("portal.pkg.other", 1, False)],
        "portal.pkg.leaf": [],
        "portal.pkg.other": [Import("portal.x", 1, False)],
    }
    cycle = ["portal.pkg", "portal.pkg.other", "portal.x", "portal.pkg"]
    assert find_cycle(runtime_edges(graph)) == cycle


def test_imports_inside_functions_count() -> None:
    """The app factory imports its blueprints inside a function: they are still its imports."""
    targets = {imported.target for imported in import_graph(PORTAL_MODULES)[ROOT_PACKAGE]}
    assert {"portal.admin", "portal.api", "portal.views.reauth"} <= targets


def test_relative_imports_resolve_like_absolute_ones(tmp_path: Path) -> None:
    package = tmp_path / "portal"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text(
        "from .. import base\nfrom ..base import thing\n\ndef f():\n    from . import other\n"
    )
    (package / "sub" / "other.py").write_text("import portal.base.thing\n")
    modules = discover(package, "portal")
    graph = {name: {i.target for i in imports} for name, imports in import_graph(modules).items()}
    assert graph["portal.sub"] == {"portal.sub.leaf"}
    assert graph["portal.sub.leaf"] == {"portal.base", "portal.sub.other"}
    assert graph["portal.sub.other"] == {"portal.base"}


def plugin_modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for directory in PLUGIN_DIRS:
        modules.update(discover(directory, None))
    return modules


def test_plugins_import_only_the_plugin_api() -> None:
    """The built-in plugins are written like anyone else's: against portal.plugins alone."""
    plugins = plugin_modules()
    assert plugins, "no plugin module found"
    violations = []
    for module in plugins.values():
        for imported in imports_of(module, PORTAL_MODULES):
            if imported.target != PLUGIN_API:
                violations.append(
                    f"{module.path.relative_to(ROOT)}:{imported.line} imports "
                    f"{imported.target}; plugins import only {PLUGIN_API}"
                )
    assert not violations, "\n".join(violations)
