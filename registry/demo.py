"""``p2pz demo``: the registry end to end, offline, in a folder of its own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

CONCEPTS = [("cat", "dog"), ("kitten", "puppy"), ("day", "night"), ("horse", "zebra")]


SAMPLE_IMAGE = Path(__file__).parent / "data" / "sample.png"


def run_demo(out: Path, model: str | None = None, n: int = 1000, db: str | None = None, progress: bool = False,
             echo: Callable[[str], None] = print, edit_steps: int = 10, do_edit: bool = True) -> dict:
    from .api import Registry
    from editor.tiny import RANDOM_WEIGHTS_NOTICE, build_tiny_model

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    tiny = model is None
    if tiny:
        model_dir = out / "tiny-model"
        if not (model_dir / "model_index.json").is_file():
            info = build_tiny_model(model_dir, overwrite=True)
            echo(f"built a tiny Stable Diffusion snapshot in {model_dir} (vocabulary: {info['vocab']})")
        echo("")
        echo("!" * 100)
        echo(f"!! {RANDOM_WEIGHTS_NOTICE}")
        echo("!! Pass --model CompVis/stable-diffusion-v1-4 (or a local SD folder) to use a real model.")
        echo("!" * 100)
        echo("")
        model = str(model_dir)
    url = db or f"sqlite:///{(out / 'registry.db').resolve()}"
    echo(f"registry: {url}")
    echo(f"model:    {model}")
    reg = Registry.open(url, progress=progress)

    echo(f"\n1. template banks ({n} sentences each)")
    for pair in CONCEPTS:
        for concept in pair:
            b = reg.make_bank(concept, "templates", n=n, seed=0)
            echo(f"   {b.ref:<10} {b.n_sentences} sentences, e.g. {b.sentences[0]!r}")

    echo("\n2. directions Δ = mean(target) − mean(source)")
    built = []
    for src, tgt in CONCEPTS:
        d = reg.build_direction(src, tgt, model)
        built.append(d)
        v = d.vector_numpy()
        echo(f"   {d.ref:<18} {d.source} → {d.target}  shape {list(v.shape)}  ‖Δ‖ {float((v ** 2).sum() ** 0.5):.4g}"
             f"  BOS row ‖·‖ {float((v[0, 0] ** 2).sum() ** 0.5):.2g}")
    again = reg.build_direction("cat", "dog", model)
    echo(f"   rebuilding cat-to-dog returns the stored version: {again.ref}")

    echo("\n3. list")
    for d in reg.directions():
        echo(f"   {d.ref:<18} encoder {d.encoder[:12]}  tags {d.tags}")

    echo("\n4. search: neighbours of cat-to-dog")
    hits = reg.search("cat-to-dog", k=4)
    for h in hits:
        echo(f"   {h.score:+.4f}  {h.direction.ref}")
    pair_hits = reg.search_pair("kitten", "puppy", k=2)
    echo(f"   --pair kitten puppy → {[h.direction.ref for h in pair_hits]}")

    echo("\n5. combine and tag")
    combo = reg.combine({"cat-to-dog": 1.0, "day-to-night": 0.5}, name="cat-to-dog-at-night")
    reg.tag("cat-to-dog@1", "animals")
    echo(f"   {combo.ref} = 1.0·cat-to-dog + 0.5·day-to-night")

    lib = out / "demo-library.p2pz"
    info = reg.export([d.name for d in built] + [combo.name], lib)
    echo(f"\n6. exported {info['directions']} directions to {lib} ({info['bytes']} bytes)")
    fresh_url = f"sqlite:///{(out / 'imported.db').resolve()}"
    fresh = Registry.open(fresh_url)
    res = fresh.import_(lib)
    res2 = fresh.import_(lib)
    echo(f"   imported into {fresh_url}: {res['added']}; a second import adds {res2['added']['directions']} directions")
    fresh.close()
    edits = []
    if do_edit:
        edits = _edit_sample(reg, model, out, tiny, edit_steps, progress, echo)
    reg.close()
    echo(f"\ndone in {time.perf_counter() - t0:.1f} s")
    return {"directions": [d.ref for d in built], "combination": combo.ref, "library": str(lib),
            "search": [(h.direction.ref, h.score) for h in hits], "edits": edits}


def _edit_sample(reg, model: str, out: Path, tiny: bool, steps: int, progress: bool, echo) -> list[str]:
    """7. pix2pix-zero on the bundled sample image: caption, inversion, reference pass, two edits."""
    from editor.batch import edit_files
    from editor.config import EditConfig, InversionConfig

    from .editing import open_editor

    echo(f"\n7. edit the bundled sample image ({SAMPLE_IMAGE.name}) with pix2pix-zero, {steps} steps")
    captioner = str(Path(model) / "captioner") if tiny else None
    directions = [reg.get("cat-to-dog"), reg.get("day-to-night")]
    ed = open_editor(directions, model, captioner=captioner, progress=progress)
    t0 = time.perf_counter()
    outcomes = edit_files(ed, [SAMPLE_IMAGE], directions, out / "edits", inversion=InversionConfig(steps=steps),
                          edit=EditConfig(steps=steps), force=True, save_reconstruction=True,
                          caption=None if tiny else "a cat sitting on the grass")
    o = outcomes[0]
    if not o.ok:
        echo(f"   edit failed: {o.error}")
        return []
    echo(f"   caption: {o.caption!r}" + ("  (random BLIP weights: gibberish is expected)" if tiny else ""))
    for path in o.outputs:
        echo(f"   wrote {path}")
    echo(f"   {time.perf_counter() - t0:.1f} s for one inversion, one reference pass and {len(directions)} edits")
    return o.outputs
