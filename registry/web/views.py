"""Records → the API's JSON shapes (shared by the JSON routers and the HTML pages)."""

from __future__ import annotations

from urllib.parse import quote

from registry.library import previews as _previews


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
