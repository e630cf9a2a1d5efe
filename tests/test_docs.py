"""Documentation that cannot drift: the CLI reference is generated, README commands exist."""

import re
import shlex

import click

from p2pz.registry.cli import main
from p2pz.registry.cli.doc import render

from .conftest import REPO


def test_cli_reference_is_current():
    assert (REPO / "docs" / "cli.md").read_text() == render(), "run: python -m p2pz.registry.cli.doc > docs/cli.md"


def _filemap():
    import importlib.util

    spec = importlib.util.spec_from_file_location("filemap", REPO / "docs" / "filemap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_architecture_file_map_is_current_and_every_module_says_what_it_holds():
    filemap = _filemap()
    undocumented = [str(p.relative_to(REPO)) for p in filemap.modules() if filemap.summary(p) is None]
    assert undocumented == []
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert filemap.BEGIN in doc and filemap.END in doc
    assert filemap.update(doc) == doc, "run: python docs/filemap.py"


def test_the_file_map_check_fails_on_a_new_module(tmp_path, monkeypatch):
    """The check can fail: a module added to a copy of the packages is missing from the committed map."""
    import shutil

    filemap = _filemap()
    for pkg in filemap.PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "registry" / "library" / "planted.py").write_text('"""A planted module."""\n')
    monkeypatch.setattr(filemap, "REPO", tmp_path)
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert "registry/library/planted.py` | A planted module. |" in filemap.update(doc) != doc


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_p2pz_command_in_the_readme_exists():
    readme = (REPO / "README.md").read_text()
    lines = [ln.strip() for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S) for ln in block.splitlines()]
    checked = 0
    for line in lines:
        if not line.startswith("p2pz "):
            continue
        words = [w for w in shlex.split(line.split(" #")[0]) if w not in ("-q",)]
        cmd, i = main, 1
        while i < len(words) and words[i].startswith("--") and words[i] in ("--db",):
            i += 2
        while isinstance(cmd, click.Group) and i < len(words) and not words[i].startswith("-"):
            assert words[i] in cmd.commands, f"README uses unknown command: {line}"
            cmd = cmd.commands[words[i]]
            i += 1
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        for w in words[i:]:
            if w.startswith("--"):
                assert w.split("=")[0] in opts, f"README uses unknown option {w}: {line}"
        checked += 1
    assert checked >= 10


CITATION = re.compile(r"\b(algorithm|architecture)(?:\.md)? §(\d+(?:\.\d+)?)")


def _sections(doc: str) -> set[str]:
    """Numbers of the headings of a document in docs/ ("## 6. …" → "6", "### 6.3 …" → "6.3")."""
    text = (REPO / "docs" / f"{doc}.md").read_text()
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))


def test_every_citation_in_the_code_resolves_inside_the_repository():
    sections = {doc: _sections(doc) for doc in ("algorithm", "architecture")}
    assert {"1.2", "5", "6.3", "10"} <= sections["algorithm"] and {"2", "3", "8"} <= sections["architecture"]
    cited, missing = 0, []
    for pkg in ("store", "generators", "migrations", "editor", "registry", "bench", "tests"):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text()
            outside = re.findall(r"\b(?:reference|DESIGN) §\d", text) if path.name != "test_docs.py" else []
            assert outside == [], f"{path}: cites a document that is not in the repository"
            for doc, number in CITATION.findall(text):
                cited += 1
                if number not in sections[doc]:
                    missing.append(f"{path.relative_to(REPO)}: {doc} §{number}")
    assert missing == [] and cited >= 30


def _readme_table(renderer: str, begin: str, end: str) -> tuple[str, str]:
    """(the README's text between ``begin`` and ``end``, what ``bench/table.py``'s ``renderer`` makes of
    bench/results.json)."""
    import json
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import table
    finally:
        sys.path.pop(0)
    readme = (REPO / "README.md").read_text()
    assert begin in readme and end in readme, f"README lacks the markers {begin.strip()} … {end}"
    expected = getattr(table, renderer)(json.loads((REPO / "bench" / "results.json").read_text()))
    return readme.split(begin, 1)[1].split(end, 1)[0], expected


def test_the_readme_performance_table_is_the_committed_results():
    """Every README figure is a committed result: the table is rendered from bench/results.json."""
    shown, expected = _readme_table("render", "<!-- perf:begin -->\n", "<!-- perf:end -->")
    assert shown == expected, "run: python bench/table.py and paste it between the perf markers"
    assert expected.count("\n") >= 12


def test_the_readme_ablation_table_is_the_committed_result():
    """The shapes-world ablation table in the README is rendered from bench/results.json."""
    shown, expected = _readme_table("render_ablation", "<!-- ablation:begin -->\n", "<!-- ablation:end -->")
    assert expected.count("| circle → square |") >= 4, "no shapes_ablation result in bench/results.json"
    assert shown == expected, "run: python bench/table.py --ablation and paste it between the ablation markers"