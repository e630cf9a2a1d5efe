"""The test Hub in tests/hub_server.py, exercised over HTTP through the real huggingface_hub client (no torch)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .hub_server import INVALID_CREDENTIALS, LFS_MIN_SIZE, HubServer, git_blob_sha1

TOKEN = "hf_test_write_token"
REPO = "alice/tiny"


@pytest.fixture
def hub(monkeypatch):
    # conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported; its constant is what requests check.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # hf_xet is installed: without this, LFS files would take the Xet protocol, which this Hub does not speak
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with HubServer(tokens={TOKEN}) as server:
        yield server


@pytest.fixture
def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


def push(api: HfApi, files: dict[str, bytes], message: str = "push", **kwargs):
    ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    return api.create_commit(REPO, operations=ops, commit_message=message, **kwargs)


def read_tree(folder: str | Path) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def download(hub: HubServer, tmp_path: Path, filename: str, revision: str | None = None) -> bytes:
    path = hf_hub_download(REPO, filename, revision=revision, endpoint=hub.url, token=TOKEN,
                           cache_dir=tmp_path / "cache")
    return Path(path).read_bytes()


def test_push_then_snapshot_is_byte_identical(hub, api, tmp_path):
    api.create_repo(REPO, private=True, exist_ok=True)
    api.create_repo(REPO, private=True, exist_ok=True)  # 409 -> exist_ok
    files = {"config.json": b'{"d": 32}', "weights/model.bin": bytes(range(256)) * 40}
    info = push(api, files, "two files")

    assert len(info.oid) == 40 and info.repo_url.repo_id == REPO
    model = api.model_info(REPO)
    assert model.sha == info.oid and model.private
    assert sorted(s.rfilename for s in model.siblings) == sorted(files)
    assert sorted(api.list_repo_files(REPO)) == sorted(files)
    folder = snapshot_download(REPO, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "cache")
    assert Path(folder).name == info.oid
    assert read_tree(folder) == files == hub.files(REPO)
    assert [c.message for c in hub.commits(REPO)] == ["initial commit", "two files"]
    assert all(r.status < 400 for r in hub.log if r.path != "/api/repos/create")


def test_incremental_upload_sends_only_the_new_file(hub, api, tmp_path):
    api.create_repo(REPO)
    local = tmp_path / "model"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_bytes(b"alpha")
    (local / "sub" / "b.bin").write_bytes(b"\x00\x01" * 1000)
    api.upload_folder(repo_id=REPO, folder_path=local, commit_message="first")
    hub.log.clear()

    (local / "c.txt").write_bytes(b"gamma")
    api.upload_folder(repo_id=REPO, folder_path=local, commit_message="second")

    assert [path for r in hub.log for path in r.uploaded] == ["c.txt"]
    # b.bin is an LFS file already in storage: asked about (batch) at most, never uploaded again
    assert all(r.status < 400 and "xet" not in r.path and r.host == "hub" for r in hub.log)
    last = hub.commits(REPO)[-1]
    assert (last.message, last.added, last.deleted) == ("second", ("c.txt",), ())
    assert hub.files(REPO) == read_tree(local)


def test_delete_and_parent_commit(hub, api):
    api.create_repo(REPO)
    head = push(api, {"a.txt": b"a", "b.txt": b"b"}).oid
    stale = head
    head = api.create_commit(REPO, operations=[CommitOperationDelete("b.txt")], commit_message="drop b",
                             parent_commit=head).oid
    assert hub.files(REPO) == {"a.txt": b"a"}
    assert hub.commits(REPO)[-1].deleted == ("b.txt",)
    with pytest.raises(HfHubHTTPError) as error:
        push(api, {"c.txt": b"c"}, parent_commit=stale)
    assert error.value.response.status_code == 412
    assert api.model_info(REPO).sha == head


def test_download_by_commit_tag_and_branch(hub, api, tmp_path):
    api.create_repo(REPO)
    v1 = push(api, {"w.bin": b"one", "notes.md": b"# v1"}, "v1").oid
    api.create_tag(REPO, tag="v1.0", revision=v1)
    api.create_branch(REPO, branch="dev", revision="v1.0")
    v2 = push(api, {"w.bin": b"two"}, "v2").oid
    push(api, {"w.bin": b"dev"}, "on dev", revision="dev")

    assert download(hub, tmp_path, "w.bin", revision=v1) == b"one"
    assert download(hub, tmp_path, "w.bin", revision="v1.0") == b"one"
    assert download(hub, tmp_path, "w.bin", revision="dev") == b"dev"
    assert download(hub, tmp_path, "w.bin") == b"two"
    assert api.model_info(REPO, revision="v1.0").sha == v1 and api.model_info(REPO, revision=v2).sha == v2
    refs = api.list_repo_refs(REPO)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1.0"]
    folder = snapshot_download(REPO, revision="v1.0", allow_patterns="*.md", endpoint=hub.url, token=TOKEN,
                               cache_dir=tmp_path / "fresh")
    assert read_tree(folder) == {"notes.md": b"# v1"}


def test_missing_repo_revision_and_file_raise_hub_errors(hub, api, tmp_path):
    api.create_repo(REPO)
    push(api, {"a.txt": b"a"})
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, tmp_path, "nope.txt")
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, "a.txt", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=TOKEN).model_info("alice/missing")


def test_writes_and_private_reads_need_a_valid_token(hub, api, tmp_path):
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(HfHubHTTPError) as error:
        anonymous.create_repo(REPO)
    assert error.value.response.status_code == 401
    assert INVALID_CREDENTIALS in str(error.value)

    api.create_repo(REPO, private=True)
    for client in (anonymous, HfApi(endpoint=hub.url, token="hf_wrong")):
        with pytest.raises(HfHubHTTPError) as error:
            client.create_commit(REPO, operations=[CommitOperationAdd("x.txt", b"x")], commit_message="x")
        assert error.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as error:
        anonymous.model_info(REPO)
    assert error.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError):
        hf_hub_download(REPO, "x.txt", endpoint=hub.url, token=False, cache_dir=tmp_path / "cache")
    assert hub.files(REPO) == {}
    assert all(TOKEN not in r.path for r in hub.log)


def test_offline_mode_serves_the_cached_snapshot(hub, api, tmp_path, monkeypatch):
    api.create_repo(REPO)
    push(api, {"a.txt": b"a", "b/c.txt": b"c"})
    online = snapshot_download(REPO, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "cache")
    hub.stop()  # nothing to talk to any more

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = snapshot_download(REPO, endpoint="http://127.0.0.1:9", token=TOKEN, cache_dir=tmp_path / "cache")
    assert offline == online and read_tree(offline) == {"a.txt": b"a", "b/c.txt": b"c"}
    assert Path(hf_hub_download(REPO, "b/c.txt", cache_dir=tmp_path / "cache")).read_bytes() == b"c"


def test_tamper_changes_bytes_but_not_commit_or_etag(hub, api, tmp_path):
    api.create_repo(REPO)
    sha = push(api, {"w.txt": b"genuine", "w.safetensors": b"genuine lfs"}).oid
    hub.tamper(REPO, "w.txt", b"evil!!!")
    hub.tamper(REPO, "w.safetensors", b"evil lfs!!!")

    assert download(hub, tmp_path, "w.txt") == b"evil!!!"  # huggingface_hub itself does not notice
    assert download(hub, tmp_path, "w.safetensors") == b"evil lfs!!!"  # nor for an LFS file
    assert api.model_info(REPO).sha == sha and len(hub.commits(REPO)) == 2
    entries = {e.path: e for e in api.list_repo_tree(REPO)}
    assert entries["w.txt"].blob_id == git_blob_sha1(b"genuine")
    assert entries["w.safetensors"].lfs.sha256 == hashlib.sha256(b"genuine lfs").hexdigest()


def test_lfs_files_go_through_the_batch_api_and_signed_storage(hub, api, tmp_path):
    """The real Hub's path for weights: preupload says "lfs" (suffix, ≥ 10 MiB or binary), the client asks the
    git-lfs batch API, PUTs to storage (another origin, no token), verifies, and commits an ``lfsFile`` pointer;
    a download is redirected to storage, and the token stays on the Hub."""
    api.create_repo(REPO)
    big = bytes(range(256)) * (LFS_MIN_SIZE // 256 + 1)  # over 10 MiB, a name that is not LFS by suffix
    files = {"config.json": b'{"d": 32}', "w.safetensors": b"\x08\x00tensors", "big.dat": big}
    push(api, files)
    puts = [r for r in hub.log if r.host == "storage" and r.method == "PUT"]
    assert sorted(oid for r in puts for oid in r.uploaded) == sorted(hashlib.sha256(files[p]).hexdigest()
                                                                     for p in ("w.safetensors", "big.dat"))
    assert [p for r in hub.log for p in r.uploaded if r.host == "hub"] == ["config.json"]  # inline: text only
    assert any(r.path.endswith(".git/info/lfs/objects/batch") for r in hub.log)
    assert sum(r.path.endswith(".git/info/lfs/objects/verify") for r in hub.log) == 2
    assert hub.repo(REPO).lfs_objects.keys() == {hashlib.sha256(files[p]).hexdigest()
                                                 for p in ("w.safetensors", "big.dat")}
    hub.log.clear()
    folder = snapshot_download(REPO, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "cache")
    assert read_tree(folder) == files == hub.files(REPO)
    gets = [r for r in hub.log if r.host == "storage"]
    assert len(gets) >= 2 and not any(r.authorization for r in gets)  # the token never left the Hub
    assert all(r.authorization for r in hub.log if r.host == "hub")
    hub.log.clear()  # the same content again: storage already holds it, nothing is uploaded twice
    push(api, {"copy.safetensors": files["w.safetensors"]})
    assert not [r for r in hub.log if r.host == "storage"]
    assert hub.files(REPO)["copy.safetensors"] == files["w.safetensors"]


def test_storage_refuses_unsigned_or_wrong_content(hub, api):
    import httpx

    api.create_repo(REPO)
    oid = hashlib.sha256(b"data").hexdigest()
    path = f"/upload/model/{REPO}/{oid}/4"
    assert httpx.put(f"{hub.storage_url}{path}?sig=forged", content=b"data").status_code == 403
    assert httpx.put(hub._signed(path), content=b"evil").status_code == 400
    assert oid not in hub.repo(REPO).lfs_objects
    commit = ('{"key": "header", "value": {"summary": "x"}}\n'
              f'{{"key": "lfsFile", "value": {{"path": "w.bin", "algo": "sha256", "oid": "{oid}", "size": 4}}}}\n')
    r = httpx.post(f"{hub.url}/api/models/{REPO}/commit/main", content=commit.encode(),
                   headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"})
    assert r.status_code == 422 and "does not exist" in r.json()["error"]


def test_interrupted_download(hub, api, tmp_path):
    api.create_repo(REPO)
    data = bytes(range(256)) * 64
    push(api, {"w.bin": data})

    hub.fail_download(REPO, "w.bin", mode="error")
    with pytest.raises(HfHubHTTPError) as error:
        download(hub, tmp_path, "w.bin")
    assert error.value.response.status_code == 500
    assert not list((tmp_path / "cache").rglob("blobs/*"))  # no partial blob kept
    assert download(hub, tmp_path, "w.bin") == data

    # Cut once: huggingface_hub retries after 1 s. It writes by 10 MiB chunks, so for a small file nothing was
    # kept and the retry starts over (no Range); past 10 MiB it would resume with `Range: bytes=N-` (206).
    hub.fail_download(REPO, "w.bin", mode="truncate")
    hub.log.clear()
    assert download(hub, tmp_path / "fresh", "w.bin") == data
    assert [r.status for r in hub.log if r.method == "GET"] == [200, 200]
