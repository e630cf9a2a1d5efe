"""Imports point down (docs/architecture.md §2): every import in the packages, function-local ones included."""

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGES = ("store", "generators", "migrations", "editor", "registry")
ALLOWED = {  # package → the p2pz packages it may import (besides itself)
    "store": set(),
    "generators": set(),
    "migrations": {"store"},
    "editor": {"store"},
    "registry": {"store", "generators", "migrations", "editor"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _local(name: str) -> str:
    """``p2pz.store.db`` → ``store.db``: installed, every package lives under ``p2pz`` (architecture §2); the rules
    below speak of the repository's folders. Any other name is returned as it is."""
    return name.removeprefix("p2pz.") if name.startswith("p2pz.") else name


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import statement anywhere in the file."""
    return imports_of_tree(ast.parse(path.read_text(), str(path)), _module_name(path), path.name == "__init__.py")


def imports_of_tree(tree, module: str, is_package: bool) -> list[tuple[int, str, list[str]]]:
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, _local(alias.name), []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = _local(node.module)
            names = [a.name for a in node.names]
            if node.module is None:  # "from . import x": each name is a module
                out += [(node.lineno, f"{target}.{n}", []) for n in names]
            else:
                out.append((node.lineno, target, names))
    return out


def all_imports():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            for line, target, names in imports_of(path):
                yield pkg, f"{path.relative_to(REPO)}:{line}", target, names


def test_the_parser_sees_function_local_and_relative_imports():
    found = {(t, tuple(n)) for _, where, t, n in all_imports() if where.startswith("registry/cli/__init__.py")}
    assert ("registry.cli.edit", ()) in found  # "from . import … edit …" at the bottom of the module
    assert any(t == "editor.loader" for t, _ in found)  # inside _user_errors()
    assert ("registry.library.api", ("Registry",)) in found  # "from ..api import Registry", inside a method


def test_imports_point_down_only():
    upward = [f"{where}: {pkg} imports {target}" for pkg, where, target, _ in all_imports()
              if target.split(".")[0] in PACKAGES and target.split(".")[0] not in ALLOWED[pkg] | {pkg}]
    assert upward == []


# Inside registry/ (architecture §2): the library, exchange and analysis know neither front end nor an engine's
# internals (``registry.engine`` itself is the interface they are handed); the two front ends never call each other,
# except that ``p2pz serve`` starts the web app through the package's public face (``registry.web``, nothing inside).
FORBIDDEN = {  # subpackage → the registry modules it must not import (a trailing dot: anything below that name)
    "registry.library": ("registry.cli", "registry.web", "registry.demo", "registry.engine."),
    "registry.exchange": ("registry.cli", "registry.web", "registry.demo", "registry.engine."),
    "registry.analysis": ("registry.cli", "registry.web", "registry.demo", "registry.engine."),
    "registry.engine": ("registry.cli", "registry.web", "registry.demo"),
    "registry.web": ("registry.cli", "registry.demo"),
    "registry.cli": ("registry.web.",),
}


def _subpackage(where: str) -> str:
    parts = where.split(":")[0].removesuffix(".py").split("/")
    return ".".join(parts[:2])


def forbidden_imports(imports) -> list[str]:
    found = []
    for pkg, where, target, _ in imports:
        if pkg != "registry":
            continue
        for bad in FORBIDDEN.get(_subpackage(where), ()):
            if (target.startswith(bad) if bad.endswith(".") else (target == bad or target.startswith(bad + "."))):
                found.append(f"{where}: {_subpackage(where)} imports {target}")
    return found


def test_web_routers_share_views_not_each_other():
    """What two routers both need (a direction's detail, a search) lives in registry/web/views.py."""
    crossed = [f"{where}: {target}" for _, where, target, _ in all_imports()
               if where.startswith("registry/web/routers/") and target.startswith("registry.web.routers.")
               and target.rsplit(".", 1)[1] != Path(where.split(":")[0]).stem]
    assert crossed == []


def test_registry_subpackages_keep_to_their_concern():
    assert forbidden_imports(all_imports()) == []


@pytest.mark.parametrize("where, bad", [
    ("library/planted.py", "from p2pz.registry.cli import main"),
    ("analysis/planted.py", "from ..web.jobs import Jobs"),
    ("web/planted.py", "from p2pz.registry.cli.edit import edit"),
    ("cli/planted.py", "from ..web.deps import state"),
    ("library/planted2.py", "from p2pz.registry.engine.ray import ray_iter"),
])
def test_the_subpackage_rules_catch_a_planted_import(tmp_path, monkeypatch, where, bad):
    import shutil

    from . import test_architecture as me

    fake = tmp_path / "repo"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, fake / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (fake / "registry" / where).write_text(f"def f():\n    {bad}\n")
    monkeypatch.setattr(me, "REPO", fake)
    assert [f.split(": ", 1)[0] for f in forbidden_imports(me.all_imports())] == [f"registry/{where}:2"]


def private_uses(root=None) -> list[str]:
    """Every use of another module's ``_private`` name: imported by name, or read off an imported module
    (``from store import repository as repo; repo._x``)."""
    root = root or REPO
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            parts = list(path.relative_to(root).with_suffix("").parts)
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules = set()  # local names bound to p2pz modules
            for line, target, names in imports_of_tree(tree, module, path.name == "__init__.py"):
                if target.split(".")[0] not in PACKAGES or target == module:
                    continue
                found += [f"{path.relative_to(root)}:{line}: {target}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module is not None:
                    modules.update(a.asname or a.name for a in node.names)
                elif isinstance(node, ast.Import):
                    modules.update((a.asname or a.name).split(".")[0] for a in node.names
                                   if _local(a.name).split(".")[0] in PACKAGES)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                        and node.attr.startswith("_") and not node.attr.startswith("__")):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    assert private_uses() == []


def test_the_private_name_check_catches_a_planted_use(tmp_path):
    import shutil

    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "registry" / "planted.py").write_text(
        "from p2pz.store import repository as repo\nfrom p2pz.store.db import _sqlite_pragmas\n\n\ndef f():\n"
        "    return repo._hidden\n")
    assert private_uses(tmp_path) == ["registry/planted.py:2: store.db._sqlite_pragmas",
                                      "registry/planted.py:6: repo._hidden"]


def test_no_cycles_between_packages():
    edges = {pkg: set() for pkg in PACKAGES}
    for pkg, _, target, _ in all_imports():
        top = target.split(".")[0]
        if top in PACKAGES and top != pkg:
            edges[pkg].add(top)

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [p for p in PACKAGES if p in reachable(p)] == []


def test_no_package_imports_another_packages_private_names():
    private = []
    for pkg, where, target, names in all_imports():
        top = target.split(".")[0]
        if top not in PACKAGES or top == pkg:
            continue
        parts = target.split(".")[1:]
        bad = [p for p in parts if p.startswith("_") and not p.startswith("__")]
        bad += [n for n in names if n.startswith("_") and not n.startswith("__")]
        if bad:
            private.append(f"{where}: {target} {bad}")
    assert private == []


@pytest.mark.parametrize("bad, expect", [
    ("from p2pz.registry.library.api import Registry", "store imports registry.library.api"),
    ("import p2pz.editor.loader", "store imports editor.loader"),
])
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, bad, expect):
    """The rule itself can fail: plant an upward import in a copy of store/ and run the same check on it."""
    import shutil

    from . import test_architecture as me

    fake = tmp_path / "repo"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, fake / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (fake / "store" / "planted.py").write_text(f"def f():\n    {bad}\n")
    monkeypatch.setattr(me, "REPO", fake)
    found = [f"{pkg} imports {target}" for pkg, _, target, _ in me.all_imports()
             if target.split(".")[0] in PACKAGES and target.split(".")[0] not in ALLOWED[pkg] | {pkg}]
    assert found == [expect]


def bare_imports(root=None) -> list[str]:
    """Imports of the repository's folders by their bare names (``import store``): installed, only ``p2pz`` exists
    (architecture §2), so such an import works in the checkout and fails for every user of the wheel."""
    root = root or REPO
    found = []
    for folder in (*PACKAGES, "p2pz", "tests", "bench"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
                found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    return found


def test_every_import_goes_through_the_p2pz_namespace():
    assert bare_imports() == []


def test_the_namespace_check_catches_a_bare_import(tmp_path):
    import shutil

    for folder in (*PACKAGES, "p2pz", "tests", "bench"):
        (tmp_path / folder).mkdir()
    shutil.copytree(REPO / "store", tmp_path / "store", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "bench" / "planted.py").write_text("def f():\n    import store.db\n    from editor import x\n")
    assert bare_imports(tmp_path) == ["bench/planted.py:2: store.db", "bench/planted.py:3: editor"]
