"""Records → the API's JSON shapes (shared by the JSON routers and the HTML pages)."""

from __future__ import annotations

from urllib.parse import quote

from p2pz.registry.library import previews as _previews

from .deps import State, heavy_slot
from .errors import HTTPError

SAMPLE_SENTENCES = 8  # a bank's first sentences on a direction's page
MAX_PAGE = 10**6  # pages are ASCII digits within bounds: page × per_page stays far inside a database integer


def direction_url(ref: str) -> str:
    return "/d/" + quote(ref, safe="@")


def preview_out(entry: dict) -> dict:
    base = f"/api/previews/{entry['key']}"
    return {"source": f"{base}/source_thumb", "edit": f"{base}/edit_thumb", "source_full": f"{base}/source",
            "edit_full": f"{base}/edit", "image": entry.get("image", "")}


def direction_out(d, scores: dict | None = None, with_preview: bool = True) -> dict:
    out = {**d.to_dict(), "scores": (scores or {}).get("scores", {}), "url": direction_url(d.ref),
           "preview": None}
    if with_preview:
        found = _previews.lookup(d)
        out["preview"] = preview_out(found[0]) if found else None
    return out


def directions_out(registry, ds: list) -> list[dict]:
    scores = registry.scores(ds) if ds else {}
    return [direction_out(d, scores.get(d.ref)) for d in ds]


def job_out(job) -> dict:
    out = job.to_dict()
    out["url"] = f"/api/jobs/{job.id}"
    out["input_url"] = f"/api/jobs/{job.id}/input" if job.kind == "edit" else None
    results = []
    for i, r in enumerate(job.results):
        r = dict(r)
        if job.kind == "edit":
            r["url"] = f"/api/jobs/{job.id}/results/{i}"
        elif r.get("preview"):
            r["url"] = f"/api/previews/{r['preview']}/edit"
        results.append(r)
    out["results"] = results
    return out


# --- what a direction's page and a search show (the JSON routes and the HTML pages alike) -------------------

def detail(st: State, ref: str) -> dict:
    """Everything the direction page shows (diagnostics come separately: they may need the text encoder)."""
    reg = st.registry
    d = reg.get(ref)
    banks = {}
    for side in ("source", "target"):
        bank_ref = getattr(d, side)
        if bank_ref:
            b = reg.bank(bank_ref, limit=SAMPLE_SENTENCES)  # never the whole bank: it may be big
            banks[side] = {"ref": b.ref, "concept": b.concept, "version": b.version, "generator": b.generator,
                           "n_sentences": b.n_sentences, "sha256": b.sha256, "sample": b.sentences}
    versions = reg.versions(d.name)
    scores = reg.scores(versions)
    evaluation = scores.get(d.ref)
    if evaluation:
        evaluation = {**evaluation, "created_at": evaluation["created_at"].isoformat()}
    students = []
    for s in reg.students():
        if s.direction == d.ref:
            info = s.to_dict()
            info["params"] = {k: val for k, val in info["params"].items() if k != "run"}  # a server path
            students.append(info)
    return {"direction": direction_out(d, scores.get(d.ref)),
            "vector": d.vector_stats(),
            "banks": banks, "evaluation": evaluation,
            "versions": [direction_out(x, scores.get(x.ref), with_preview=False) for x in versions],
            "students": students, "previews": [preview_out(e) for e in _previews.lookup(d)],
            "diagnostics_url": f"/api/directions/{d.ref}/diagnostics"}


def pair_key_cached(st: State, source: str, target: str):
    """The pair's key when no encoding is needed (stored embeddings, or the server's cache), else None."""
    return st.registry.pair_key(source, target, model=st.settings.model, cache=st.pair_keys, encode=False)


def run_search(st: State, direction: str | None, source: str | None, target: str | None, k: int):
    if direction and (source or target):
        raise HTTPError(400, "search by direction= or by source= and target=, not both")
    if direction:  # the index rebuilds itself under its own lock when stale; searches run side by side
        hits = st.registry.search(direction, k)
        return {"direction": direction}, hits
    if source and target:
        got = pair_key_cached(st, source, target)
        if got is None:  # two banks to encode (seconds): one of the few heavy slots, never the index lock
            with heavy_slot(st, "pair", "encoding a word pair"):
                got = st.registry.pair_key(source, target, model=st.settings.model, cache=st.pair_keys,
                                           encode_lock=st.encode_lock, encode_in=st.pair_encoder)
        hits = st.registry.hits(*got, k)
        return {"source": source, "target": target}, hits
    raise HTTPError(400, "give direction=NAME[@V], or both source= and target= (a word pair)")
