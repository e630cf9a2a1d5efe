"""Package discovery for the one installed namespace, ``p2pz`` (architecture §2; everything else is in
pyproject.toml).

The repository keeps the folders the project's card names at its top level (``registry``, ``generators``,
``store``, ``editor``, ``migrations``); installed, each is a subpackage of ``p2pz`` (``p2pz.store``, …), so the
wheel installs one top-level name. Every folder holding Python code below those roots is found here, so a new
subpackage cannot be left out of the wheel (issue #35: ``registry.library`` once was).
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
ROOTS = ("registry", "generators", "store", "editor", "migrations")
SKIP = {"__pycache__"}


def packages_under(root: str) -> list[str]:
    """Every folder under ``root`` (itself included), as ``p2pz.``-dotted names: the folders of code, and the folders
    of data (the shapes model's weights, the web app's templates) that ``package-data`` in pyproject.toml fills."""
    found = []
    for folder in sorted([HERE / root, *(p for p in (HERE / root).rglob("*") if p.is_dir())]):
        rel = folder.relative_to(HERE)
        if not SKIP & set(rel.parts):
            found.append(".".join(("p2pz", *rel.parts)))
    return found


setup(
    packages=["p2pz", *(name for root in ROOTS for name in packages_under(root))],
    package_dir={"p2pz": "p2pz", **{f"p2pz.{root}": root for root in ROOTS}},
)
