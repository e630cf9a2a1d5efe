"""``p2pz demo``: the registry end to end, offline, in a folder of its own.

By default it runs on the shapes model (``p2pz/shapes``, architecture §12): a small text-to-image model p2pz
trained on its synthetic shapes world, so the edits at the end are real edits a person can judge — a circle
becomes a square, red becomes blue, day becomes night — and the parser says what each image shows. With
``--model`` (a Stable Diffusion hub id or folder, or a ``p2pz dev tiny-model`` folder) it runs the same steps on
cat/dog/day/night concepts and the bundled photo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from p2pz.editor.config import EditConfig, InversionConfig
from p2pz.editor.loader import SHAPES_MODEL
from p2pz.editor.shapes import world
from p2pz.editor.shapes import parse as shapes_parse
from p2pz.editor.tiny import RANDOM_WEIGHTS_NOTICE, is_random_weights
from p2pz.store.files import atomic_write

from p2pz.registry.library.api import Registry

CONCEPTS = [("cat", "dog"), ("kitten", "puppy"), ("day", "night"), ("horse", "zebra")]
SHAPES_CONCEPTS = [("circle", "square"), ("red", "blue"), ("day", "night"), ("triangle", "star")]
SHAPES_BANK_SIZE = 100  # sentences per bank on the shapes model: its 77-token MiniLM encodes ≈ 20 ms a sentence here


SAMPLE_IMAGE = Path(__file__).parent / "data" / "sample.png"


def _banner(model: str, shapes: bool, tiny: bool, echo) -> None:
    if shapes:
        from p2pz.editor.shapes.model import LABEL  # the world's model card: only for its demo

        echo(f"model: {LABEL}.")
        echo("Pass --model CompVis/stable-diffusion-v1-4 (or a local SD folder) to run these steps on real photos.")
    elif tiny:
        echo("")
        echo("!" * 100)
        echo(f"!! {RANDOM_WEIGHTS_NOTICE}")
        echo("!" * 100)
        echo("")


def _banks_and_directions(reg, concepts, model: str, n: int, echo) -> list:
    """Steps 1 and 2: a template bank per concept, a direction per pair (and a rebuild returning it)."""
    echo(f"\n1. template banks ({n} sentences each; the template kind is chosen from the word)")
    for pair in concepts:
        for concept in pair:
            b = reg.make_bank(concept, "templates", n=n, seed=0)
            kind = (b.params or {}).get("template_kind", "?")
            echo(f"   {b.ref:<10} {kind:<9} {b.n_sentences} sentences, e.g. {b.sentences[0]!r}")
    echo("\n2. directions Δ = mean(target) − mean(source)")
    built = []
    for src, tgt in concepts:
        d = reg.build_direction(src, tgt, model)
        built.append(d)
        v = d.vector_numpy()
        echo(f"   {d.ref:<18} {d.source} → {d.target}  shape {list(v.shape)}  ‖Δ‖ {float((v ** 2).sum() ** 0.5):.4g}"
             f"  BOS row ‖·‖ {float((v[0, 0] ** 2).sum() ** 0.5):.2g}")
    again = reg.build_direction(built[0].source, built[0].target, model)
    echo(f"   rebuilding {built[0].name} returns the stored version: {again.ref}")
    return built


def _browse(reg, first, probe, echo) -> list:
    """Steps 3 and 4: the listing, the neighbours of the first direction, a word-pair search."""
    echo("\n3. list")
    for d in reg.directions():
        echo(f"   {d.ref:<18} encoder {d.encoder[:12]}  tags {d.tags}")
    echo(f"\n4. search: neighbours of {first.name}")
    hits = reg.search(first.name, k=4)
    for h in hits:
        echo(f"   {h.score:+.4f}  {h.direction.ref}")
    pair_hits = reg.search_pair(probe[0], probe[1], k=2)
    echo(f"   --pair {probe[0]} {probe[1]} → {[h.direction.ref for h in pair_hits]}")
    return hits


def _exchange(reg, out: Path, names: list[str], echo) -> Path:
    """Step 6: export a library, import it twice into a fresh registry (the second adds nothing)."""
    lib = out / "demo-library.p2pz"
    info = reg.export(names, lib)
    echo(f"\n6. exported {info['directions']} directions to {lib} ({info['bytes']} bytes)")
    fresh_url = f"sqlite:///{(out / 'imported.db').resolve()}"
    fresh = Registry.open(fresh_url)
    res = fresh.import_(lib)
    res2 = fresh.import_(lib)
    echo(f"   imported into {fresh_url}: {res['added']}; a second import adds {res2['added']['directions']} directions")
    fresh.close()
    return lib


def run_demo(out: Path, model: str | None = None, n: int | None = None, db: str | None = None,
             progress: bool = False, echo: Callable[[str], None] = print, edit_steps: int | None = None,
             do_edit: bool = True) -> dict:
    """``p2pz demo``: every step of the product on one model (the shapes model by default), then its edits."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model = model or SHAPES_MODEL
    shapes = model == SHAPES_MODEL
    tiny = not shapes and is_random_weights(model)
    n = n or (SHAPES_BANK_SIZE if shapes else 1000)
    concepts = SHAPES_CONCEPTS if shapes else CONCEPTS
    _banner(model, shapes, tiny, echo)
    url = db or f"sqlite:///{(out / 'registry.db').resolve()}"
    echo(f"registry: {url}")
    echo(f"model:    {model}")
    reg = Registry.open(url, progress=progress)
    built = _banks_and_directions(reg, concepts, model, n, echo)
    first = built[0]
    hits = _browse(reg, first, concepts[-1], echo)
    echo("\n5. combine and tag")
    night = "day-to-night"
    combo = reg.combine({first.name: 1.0, night: 0.5}, name=f"{first.name}-at-night")
    reg.tag(first.ref, "shapes" if shapes else "animals")
    echo(f"   {combo.ref} = 1.0·{first.name} + 0.5·{night}")
    lib = _exchange(reg, out, [d.name for d in built] + [combo.name], echo)
    edits = []
    if do_edit and shapes:
        edits = _edit_shapes(reg, out, built[:3], edit_steps or 50, progress, echo)
    elif do_edit:
        edits = _edit_sample(reg, model, out, tiny, edit_steps or 10, progress, echo)
    reg.close()
    echo(f"\ndone in {time.perf_counter() - t0:.1f} s")
    return {"directions": [d.ref for d in built], "combination": combo.ref, "library": str(lib),
            "search": [(h.direction.ref, h.score) for h in hits], "edits": edits}


DEMO_SEED = 10_000_000 + 424242  # a held-out shapes scene (world.HELD_OUT + …): never seen in training


def _edit_shapes(reg, out: Path, directions: list, steps: int, progress: bool, echo) -> list[str]:
    """7. pix2pix-zero on a held-out shapes image: inversion, one reference pass, three edits, a grid."""
    from p2pz.editor.batch import edit_files  # lazy: PIL
    from p2pz.editor.caption import png_info  # lazy: torch

    from p2pz.registry.library.editing import open_editor  # lazy: PIL

    sample = world.sample(DEMO_SEED, shape="circle", colour="red", background="day", size="large",
                          position="center")
    src = out / "shapes-source.png"
    atomic_write(src, writer=lambda p: sample.image().save(p, format="PNG", pnginfo=png_info(sample.caption)))
    echo(f"\n7. edit a held-out shapes image ({src.name}: {sample.caption!r}) with pix2pix-zero, {steps} steps")
    ed = open_editor(directions, SHAPES_MODEL, progress=progress)
    t0 = time.perf_counter()
    outcomes = edit_files(ed, [src], directions, out / "edits", inversion=InversionConfig(steps=steps),
                          edit=EditConfig(steps=steps), force=True, save_reconstruction=True)
    o = outcomes[0]
    if not o.ok:
        echo(f"   edit failed: {o.error}")
        return []
    echo(f"   caption (recorded in the PNG): {o.caption!r}")
    from PIL import Image  # lazy: PIL

    panels = [("source", sample.image())]
    recon = [p for p in o.outputs if p.endswith("__reconstruction.png")]
    for path in o.outputs:
        if path in recon:
            continue
        img = Image.open(path).convert("RGB")
        p = shapes_parse.parse(img)
        label = Path(path).stem.split("__", 1)[1]
        echo(f"   wrote {path}: the parser reads a {p.colour} {p.shape} on {p.background}")
        panels.append((label, img))
    if recon:
        panels.insert(1, ("reconstruction", Image.open(recon[0]).convert("RGB")))
    grid = out / "edits" / "grid.png"
    write_grid(grid, panels)
    echo(f"   before/after grid: {grid}")
    echo(f"   {time.perf_counter() - t0:.1f} s for one inversion, one reference pass and {len(directions)} edits")
    return o.outputs + [str(grid)]


def write_grid(path: Path, panels: list, scale: int = 3) -> None:
    """A labelled row of images (each upscaled ``scale`` × with nearest-neighbour, so pixels stay pixels)."""
    from PIL import Image, ImageDraw  # lazy: PIL

    side = max(im.width for _, im in panels) * scale
    pad, label_h = 6, 16
    grid = Image.new("RGB", (len(panels) * (side + pad) + pad, side + label_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (label, im) in enumerate(panels):
        x = pad + i * (side + pad)
        grid.paste(im.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (x, pad))
        draw.text((x + 2, side + pad + 2), label, fill=(0, 0, 0))
    atomic_write(path, writer=lambda p: grid.save(p, format="PNG"))


def _edit_sample(reg, model: str, out: Path, tiny: bool, steps: int, progress: bool, echo) -> list[str]:
    """7. pix2pix-zero on the bundled sample image: caption, inversion, reference pass, two edits."""
    from p2pz.editor.batch import edit_files  # lazy: PIL

    from p2pz.registry.library.editing import open_editor  # lazy: PIL

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
