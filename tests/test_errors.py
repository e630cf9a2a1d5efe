"""Bad input through the CLI: one line on stderr, exit status 1, the database unchanged."""

import pickle

import pytest
import torch
from click.testing import CliRunner

from p2pz.registry import Registry
from p2pz.registry.cli import main

from .conftest import db_dump


class Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


@pytest.fixture
def populated(db_url, tiny_model, tiny_model_b, tmp_path):
    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=30)
    reg.build_direction("cat", "dog", str(tiny_model_b), n=30, name="cat-to-dog-b")
    reg.close()
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "three.txt").write_text("a photo of x\nx in the sun\nx at night\n")
    torch.save(torch.zeros(1, 77, 32), tmp_path / "ok.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Evil(), f)
    return tmp_path


CASES = {
    "unknown direction": (["direction", "show", "horse-to-zebra"], "no direction named"),
    "unknown direction version": (["direction", "show", "cat-to-dog@7"], "versions: [1]"),
    "unknown concept": (["bank", "show", "unicorn"], "no bank for concept"),
    "malformed ref": (["direction", "show", "cat-to-dog@x"], "malformed"),
    "malformed ref 2": (["direction", "show", "cat@1@2"], "malformed"),
    "malformed ref 3": (["bank", "show", "@3"], "malformed"),
    "superscript version": (["direction", "show", "cat-to-dog@\u00b2"], "ASCII digits"),
    "huge version": (["direction", "show", "cat-to-dog@99999999999999999999"], "from 1 to 2147483647"),
    "arabic-indic version": (["direction", "show", "cat-to-dog@\u0662"], "ASCII digits"),  # never read as @2
    "huge bank version": (["bank", "show", "cat@4611686018427387904"], "from 1 to 2147483647"),
    # names are checked once, at creation, with the rule addresses use (else stored, then unaddressable)
    "bank name with a slash": (["bank", "create", "x/y", "-n", "5"], "malformed bank name"),
    "bank name with a tab": (["bank", "create", "x\ty", "-n", "5"], "malformed bank name"),
    "bank name with a backslash": (["bank", "create", "x\\y", "-n", "5"], "malformed bank name"),
    "bank name with a zero-width space": (["bank", "create", "x\u200by", "-n", "5"], "malformed bank name"),
    "bank from a file, name with a slash": (["bank", "create", "x/y", "--from", "file", "--file", "{tmp}/three.txt"],
                                            "malformed bank name"),
    "direction named with a slash": (["direction", "combine", "cat-to-dog=1", "--name", "a/b"],
                                     "malformed direction name"),
    "tag too long": (["direction", "tag", "cat-to-dog@1", "t" * 65], "at most 64"),
    "tag with a control character": (["direction", "tag", "cat-to-dog@1", "a\x07b"], "control or invisible"),
    "tag with a zero-width space": (["direction", "tag", "cat-to-dog@1", "a\u200bb"], "control or invisible"),
    "empty bank file": (["bank", "create", "cat", "--from", "file", "--file", "{tmp}/empty.txt"], "no sentences"),
    "missing bank file": (["bank", "create", "cat", "--from", "file", "--file", "{tmp}/nope.txt"], "does not exist"),
    "pickled .pt": (["import-pt", "{tmp}/ok.pt", "{tmp}/evil.pt", "--model", "{model}"], "weights_only"),
    # (a zip member with ../ is refused by tests/test_exchange.py, and fuzzed by tests/test_hostile_files.py)
    "not a library": (["import", "{tmp}/ok.pt"], "expected members"),
    "mismatched encoders": (["direction", "combine", "cat-to-dog=1", "cat-to-dog-b=1", "--name", "x"],
                            "different text encoders"),
    "missing model": (["direction", "build", "cat", "dog", "--model", "{tmp}/no-such-model"], "does not exist"),
    "model folder without text_encoder": (["direction", "build", "cat", "lion", "--model", "{tmp}"],
                                          "neither a Stable Diffusion snapshot"),
    "deprecate without version": (["direction", "deprecate", "cat-to-dog"], "explicit version"),
    "bad combine weight": (["direction", "combine", "cat-to-dog=heavy", "--name", "x"], "not a number"),
    "bad db url": (["--db", "nonsense://", "direction", "list"], "database"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_1_and_changes_nothing(case, populated, db_url, tiny_model, monkeypatch):
    monkeypatch.chdir(populated)
    args, expected = CASES[case]
    args = [a.format(tmp=populated, model=tiny_model) for a in args]
    before = db_dump(db_url)
    full = args if args[0] == "--db" else ["--db", db_url] + args
    result = CliRunner().invoke(main, full)
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert db_dump(db_url) == before
    assert not (populated / "PWNED").exists()


def test_usage_errors_exit_2(db_url):
    result = CliRunner().invoke(main, ["--db", db_url, "search"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["--db", db_url, "bank", "create", "cat", "-n", "0"])
    assert result.exit_code == 2


def test_corrupt_database_is_reported_and_left_untouched(tmp_path):
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    before = bad.read_bytes()
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{bad}", "direction", "list"])
    assert result.exit_code == 1 and "not a valid SQLite database" in result.stderr
    assert bad.read_bytes() == before


@pytest.mark.parametrize("value", ["\u0662", "\u00b2", "99999999999999999999", "0"])
def test_version_options_take_ascii_digits_only(value, db_url):
    """``--version N`` follows the NAME@V rule (click's int reads "٢" as 2 and lets 10**20 reach the database)."""
    result = CliRunner().invoke(main, ["--db", db_url, "student", "show", "cat-to-dog", "--version", value])
    assert result.exit_code == 2 and "ASCII digits" in result.stderr, result.output
    assert "Traceback" not in result.output
