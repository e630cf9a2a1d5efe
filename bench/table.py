"""The README's performance table, rendered from ``bench/results.json`` (``python bench/table.py``).

The README holds this output between ``<!-- perf:begin -->`` and ``<!-- perf:end -->``; ``tests/test_docs.py``
checks that it is current, so every figure there is a committed result of ``make bench-full``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def _ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def rows(results: list[dict]) -> list[list[str]]:
    by = {}
    for r in results:
        key = r["benchmark"]
        if key == "bulk_import" and r["params"].get("family") == "sdxl":
            key = "bulk_import-sdxl"
        if key == "edit_sdxl" and "quick" in r["params"]["mode"]:
            key = "edit_sdxl-quick"
        if key == "edit":
            p = r["params"]
            key = "edit-quick" if "quick" in p["mode"] else ("edit-512" if p["size"] == 512 else "edit-full")
        by[key] = r
    out = []
    e = by.get("encode")
    if e:
        out += [
            ["bank encoding, CLIP-L-sized encoder, 200 sentences",
             f"{e['p2pz_batched_s']:.1f} s, **{e['speedup']:.2f}×** faster, max diff {e['max_abs_diff']:.0e}",
             f"reference one-sentence loop {e['reference_loop_s']:.1f} s", "≥ 1.1×", "`python bench/encode.py`"],
            ["encoding roofline", f"**{e['roofline_fraction']:.2f}** of the measured fp32 matmul peak "
             f"({e['matmul_peak_gflops']:.0f} GFLOP/s)", "—", "≥ 0.6", "`python bench/encode.py`"],
            ["re-encoding a stored bank", f"{_ms(e['reencode_s'])}, **{e['reencode_encoder_calls']} encoder calls**",
             f"first encode {e['store_first_encode_s']:.1f} s", "no encoder call", "`python bench/encode.py`"]]
    s = by.get("search")
    if s:
        q = s["single_query_s"]
        out.append(["search, 100k × 768 clustered keys",
                    f"p50 **{_ms(q['p50'])}**, p99 {_ms(q['p99'])}, recall@10 **{s['recall_at_10']:g}**",
                    f"numpy brute force: {s['ratio_batched_vs_numpy']:.2f}× slower batched", "p50 ≤ 5 ms, recall 1.0",
                    "`python bench/search.py`"])
    for r in sorted((r for r in results if r["benchmark"] == "index"), key=lambda r: r["params"]["size"]):
        n = r["params"]["size"]
        label = f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"
        prm = ", ".join(f"{k} {v}" for k, v in r["params"]["index_params"].items())
        target = "p50 ≤ 1 ms, recall ≥ 0.999" if n < 1_000_000 else \
            "p50 ≤ 5 ms, recall ≥ 0.99, build ≤ 120 s, RAM ≤ 4 GB"
        out.append([f"search, {label} × 768 clustered keys, `--kind {r['params']['requested']}` → {r['kind']} ({prm}), "
                    "exact re-rank",
                    f"p50 **{r['p50_ms']:.2f} ms**, p99 {r['p99_ms']:.2f} ms, recall@10 **{r['recall_at_10']:.4f}**, "
                    f"build {r['build_s']:.0f} s, index RAM {_gb(r['index_ram_bytes'])} (+ mapped keys "
                    f"{_gb(r['keys_file_bytes'])} on disk)",
                    f"exact scan p50 {r['exact_p50_ms']:.1f} ms ({r['speedup_p50']:.0f}× slower)", target,
                    f"`python bench/index_scale.py --n {n}`"])
    st = by.get("store")
    if st:
        out += [
            ["store, 10k directions / 200 concepts", f"**{st['bytes_per_direction'] / 1000:.1f} KB** per direction",
             f"{st['baseline_bytes_if_delta_stored'] / 1000:.0f} KB if Δ were stored ({st['ratio_to_baseline']:.3f}×)",
             "≤ 8 KB", "`python bench/store.py`"],
            ["`get` / open + list 10k / inserts",
             f"p50 {_ms(st['get_latency_s']['p50'])} / {st['open_and_list_s']:.2f} s / {st['insert_per_s']:.0f} per s",
             "—", "—", "`python bench/store.py`"]]
    bi = by.get("bulk_import")
    if bi:
        n = f"{bi['params']['directions'] // 1000}k"
        out.append([f"importing a {n}-direction library (SQLite)",
                    f"**{bi['directions_per_s']:,.0f} directions/s** ({bi['import_s']:.0f} s), "
                    f"{bi['bytes_per_direction'] / 1000:.1f} KB per direction, then `get` + Δ p50 "
                    f"{bi['show_p50_ms']:.1f} ms",
                    f"one insert per direction: {bi['baseline_directions_per_s']:,.0f}/s ({bi['speedup']:.1f}× slower)",
                    "≥ 2,000/s, ≤ 5 KB, show p50 ≤ 5 ms", "`python bench/bulk_import.py`"])
    bx = by.get("bulk_import-sdxl")
    if bx:
        n = f"{bx['params']['directions'] // 1000}k"
        out.append([f"importing a {n}-direction SDXL library (Δ [1, 77, 2048], 1280-wide keys)",
                    f"**{bx['bytes_per_direction'] / 1000:.1f} KB per direction** (the embeddings shared), "
                    f"{bx['directions_per_s']:,.0f} directions/s, `get` + Δ p50 {bx['show_p50_ms']:.1f} ms",
                    f"Δ + Δ_pooled if stored: {(77 * 2048 + 1280) * 4 / 1000:.0f} KB per direction", "≤ 8 KB",
                    "`python bench/bulk_import.py --family sdxl`"])
    c = by.get("cli")
    if c:
        out += [
            ["`p2pz --help`", f"**+{c['help_over_bare_s']:.2f} s** over bare Python, "
             f"{'torch imported' if c['torch_imported_help'] else 'no torch'}",
             f"`python -c pass` {c['python_c_pass_s']:.2f} s", "≤ 0.5 s, no torch", "`python bench/cli.py`"],
            ["`p2pz direction list --json`, 10k", f"**+{c['list_over_bare_s']:.2f} s** over bare Python, "
             f"{'torch imported' if c['torch_imported_list'] else 'no torch'}", "`python -c pass`",
             "≤ 0.5 s, no torch", "`python bench/cli.py`"]]
    w = by.get("web")
    if w:
        n = f"{w['params']['directions'] / 1000:.0f}k"
        out += [
            [f"web API, {n} directions: `GET /api/directions` (first page) / `GET /api/search`",
             f"p50 **{w['list_p50_ms']:.1f} ms** / **{w['search_p50_ms']:.1f} ms** (p99 {w['list_p99_ms']:.0f} / "
             f"{w['search_p99_ms']:.0f} ms)", f"a static file from the same server {w['static_p50_ms']:.1f} ms",
             "p50 ≤ 20 ms", "`python bench/web.py`"],
            [f"gallery's first page in headless Chromium, {n} directions, 24 cards with previews",
             f"**{w['gallery_load_s'] * 1000:.0f} ms** to the load event",
             f"a page with only the sample image {w['image_page_load_s'] * 1000:.0f} ms", "≤ 1 s",
             "`python bench/web.py`"],
            ["`p2pz serve` start to first answer", f"**{w['server_start_s']:.2f} s**, "
             f"{'torch imported' if w['torch_imported'] else 'no torch'} after listing, search and gallery",
             f"bare FastAPI on uvicorn {w['bare_fastapi_start_s']:.2f} s", "≤ 2 s, no torch",
             "`python bench/web.py`"]]
    wl = by.get("web_load")
    if wl:
        p = wl["params"]
        for backend in ("sqlite", "postgresql"):
            r = wl.get(backend)
            if not r:
                continue
            e = r["endpoints"]
            lat = ", ".join(f"{k} {e[k]['p50_ms']:.0f}/{e[k]['p99_ms']:.0f}" for k in ("list", "search", "page", "pair",
                                                                                       "export", "job") if e.get(k))
            out.append([f"web server under load, {backend}: {p['clients']} clients × {p['duration_s']:.0f} s, "
                        f"{r['directions'] / 1000:.0f}k directions (list, search, page, export, pair search, jobs)",
                        f"{r['requests']} requests ({r['requests_per_s']:.0f}/s), **{r['errors']} errors**, "
                        f"{r['shed_429']} shed with 429, jobs {r['jobs']['accepted']} accepted / **{r['jobs_lost']} "
                        f"lost**; pair searches answered {e['pair']['codes'].get('200', 0)} of "
                        f"{e['pair']['requests']}; p50/p99 ms: {lat}",
                        f"`/api/health` idle {r['health_idle_p50_ms']:.1f} ms", "0 errors, 0 jobs lost",
                        "`python bench/web_load.py`"])
            x = r.get("export_student")
            if x:
                out.append([f"export of one direction with a {x['bytes'] / 1e6:.0f} MB student over HTTP, "
                            f"{backend}, after the load run", f"again (export cache): {x['hit_s']:.2f} s = "
                            f"**1/{x['miss_over_hit']:.1f}** of the first; {x['concurrent']} at once: "
                            f"{x['concurrent_max_s']:.1f} s each at most",
                            f"first (built): {x['miss_s']:.2f} s; in-process `export` {x['direct_export_s']:.2f} s",
                            "a repeat costs less than a build", "`python bench/web_load.py`"])
    ry = by.get("ray")
    if ry:
        p = ry["params"]
        out.append([f"`edit --engine ray --workers 1`, {p['images']} tiny-model images, {p['steps']} steps",
                    f"{ry['ray_s']:.0f} s = **{ry['ratio']:.2f}×** the local run, outputs "
                    f"{'identical' if ry['identical_outputs'] else 'DIFFERENT'}", f"local engine {ry['local_s']:.0f} s",
                    "≤ 1.15×", "`python bench/ray_overhead.py`"])
    i = by.get("inspect")
    if i:
        out.append([f"`direction inspect`, two {i['params']['sentences_per_bank']}-sentence banks already encoded",
                    f"{i['inspect_s']:.2f} s, **{i['inspect_stability_encoder_calls']} encoder calls** for stability",
                    f"banks' statistics dropped: {i['inspect_uncached_s']:.1f} s "
                    f"({i['inspect_uncached_encoder_calls']} encoder batches)", "0 encoder calls",
                    "`python bench/inspect_direction.py`"])
    v = by.get("evaluate")
    if v:
        p = v["params"]
        out.append([f"`eval run` scoring vs editing, SD-1.5-sized, {p['size']} px, {p['steps']} steps, "
                    f"{p['images']} image{'s' if p['images'] != 1 else ''}", f"scoring {v['score_s']:.1f} s = **{100 * v['overhead_ratio']:.1f} %** "
                    "of the edit time", f"editing {v['edit_s']:.1f} s", "< 5 %",
                    "`python bench/evaluate_overhead.py`"])
    t = next((r for r in results if r["benchmark"] == "student" and not r["params"].get("steps")), None)
    c = next((r for r in results if r["benchmark"] == "student" and r["params"].get("steps")), None)
    if c:
        sc = c["scaling_check"]
        out.append([f"teacher per-step scaling check, {c['params']['size']} px, {sc['steps']} steps",
                    f"scaled from {c['params']['teacher_steps_timed']} steps {sc['teacher_scaled_s']:.0f} s = "
                    f"**{sc['scaled_over_measured']:.2f}×** the measured run", f"measured {sc['teacher_measured_s']:.0f} s",
                    "≈ 1×", "`python bench/student.py --check-steps 50`"])
    if t:
        p = t["params"]
        out.append([f"student vs diffusion edit, SD-1.5-sized teacher, {p['size']} px, 50 steps (scaled from "
                    f"{p['teacher_steps_timed']})", f"{t['student_latency_s'] * 1000:.0f} ms per image, "
                    f"**{t['speedup']:.0f}×** faster; {t['student_images_per_s_batch8']:.1f} images/s at batch 8; "
                    f"{t['student_parameters'] / 1e6:.1f} M parameters, {t['student_file_bytes'] / 2**20:.0f} MiB",
                    f"teacher {t['teacher_s_50_steps']:.0f} s", "≥ 3800×", "`python bench/student.py`"])
    f = by.get("edit-full")
    if f:
        p = f["params"]
        where = f"SD-1.5-sized, {p['size']} px, {p['steps']} steps"
        ours, theirs, frozen = f["p2pz"], f["diffusers"], f["diffusers_frozen_unet"]
        cmd = "`python bench/edit.py --full`"
        out += [
            [f"edit pass, {where}", f"{ours['times']['edit']:.1f} s, **{f['edit_pass_speedup']:.2f}×** faster",
             f"diffusers Pix2PixZero {theirs['times']['edit']:.1f} s", "≥ 2.5×", cmd],
            [f"edit pass vs diffusers with a frozen UNet, {where}",
             f"**{f['edit_pass_speedup_vs_frozen_unet']:.2f}×** faster",
             f"diffusers, UNet frozen {frozen['times']['edit']:.1f} s (same latents: diff "
             f"{f['frozen_unet_same_latents_max_abs_diff']:.0e})", "—", cmd],
            ["peak memory, reference + edit (lockstep)",
             f"{_gb(f['peak_memory_lockstep_bytes'])} = **{f['peak_memory_ratio_reference_plus_edit']:.2f}×**; "
             f"{f['peak_memory_ratio_vs_frozen_unet']:.2f}× the frozen-UNet run",
             f"diffusers {_gb(theirs['peaks']['reference+edit'])}", "≤ 0.5×", cmd],
            ["peak memory, lockstep vs the two passes one after the other",
             f"**{f['peak_memory_lockstep_vs_two_pass']:.2f}×** ({_gb(f['peak_memory_lockstep_bytes'])} vs "
             f"{_gb(f['peak_memory_two_pass_bytes'])}), bit-identical latents",
             "reference pass then edit pass", "—", cmd],
            ["final latents vs diffusers", f"max diff **{f['final_latents_max_abs_diff']:.1e}** (values up to "
             f"{f['final_latents_max_abs']:.1f})", "—", "matching", cmd],
            ["2nd direction on a cached image (`--cache-maps`)", f"**{f['second_direction_ratio']:.2f}×** the first edit",
             f"first edit {ours['first_edit_s']:.1f} s", "≤ 0.75×", cmd],
            ["3 directions in one call", f"**{f['three_in_one_call_ratio']:.2f}×** three fresh edits",
             f"three fresh edits {ours['three_fresh_s']:.1f} s", "≤ 0.8×", cmd]]
    g = by.get("edit-512")
    if g:
        ours, theirs = g["p2pz"], g["diffusers"]
        cmd = "`python bench/edit.py --full --size 512 --steps 1 --stages-only`"
        out += [
            ["edit pass, SD-1.5-sized, 512 px, 1 step",
             f"{ours['times']['edit']:.1f} s, **{g['edit_pass_speedup']:.2f}×** "
             f"({g['edit_pass_speedup_vs_frozen_unet']:.2f}× vs frozen UNet); peak memory "
             f"**{g['peak_memory_ratio_reference_plus_edit']:.2f}×** ({_gb(g['peak_memory_lockstep_bytes'])} vs "
             f"{_gb(theirs['peaks']['reference+edit'])}); max diff {g['final_latents_max_abs_diff']:.0e}",
             f"diffusers {theirs['times']['edit']:.1f} s", "—", cmd],
            ["disk cache per image, SD defaults (512 px, 50 steps)",
             f"x_T {g['inversion_cache_bytes_sd_512px'] / 1024:.0f} KB; maps only with `--cache-maps`: "
             f"**{_gb(g['map_cache_bytes_per_image_sd_512px_50_steps'])}** (float16)",
             f"before: maps always, float32: {_gb(2 * g['map_cache_bytes_per_image_sd_512px_50_steps'])}",
             "bounded (`P2PZ_CACHE_MAX_GB`)", cmd]]
    x = by.get("edit_sdxl")
    if x:
        p = x["params"]
        cmd = f"`python bench/edit_sdxl.py --full --size {p['size']} --steps {p['steps']}`"
        where = f"SDXL-sized ({p['unet_parameters'] / 1e9:.2f} B UNet), {p['size']} px"
        m = x["map_bytes_per_step_1024px"]
        out += [
            [f"SDXL guided step, {where}",
             f"{x['guided_step_s']:.1f} s = **{x['guided_step_unet_forwards']:.2f}** UNet-forward equivalents (warm, "
             f"steps 2…N of an edit); an edit's first step {x['guided_step_cold_s']:.1f} s = "
             f"{x['guided_step_cold_unet_forwards']:.2f} (allocates the graph); with the reference step (lockstep, "
             f"first step) {x['lockstep_step_s']:.1f} s",
             f"plain SDXL denoising step (CFG pair) {x['plain_step_s']:.1f} s", "≤ 3.0", cmd],
            [f"SDXL peak memory, reference + edit, {where}",
             f"lockstep {_gb(x['peak_lockstep_bytes'])} = **{x['peak_lockstep_vs_two_pass']:.2f}×** the two passes "
             f"one after the other ({_gb(x['peak_two_pass_bytes'])}), max diff "
             f"{x['lockstep_max_abs_diff_to_two_pass']:.0e}; **{x['peak_lockstep_vs_plain']:.1f}×** a plain step",
             f"plain step {_gb(x['peak_plain_bytes'])} (all above the loaded weights)", "—", cmd],
            ["SDXL reference maps per step at 1024 px (from measured per-layer bytes, float32)",
             f"`--xa-layers all` ({x['map_layers']['all']}) **{_gb(m['all'])}**, high ({x['map_layers']['high']}) "
             f"{_gb(m['high'])}, low ({x['map_layers']['low']}) {_gb(m['low'])}",
             f"measured at {p['size']} px: {_gb(x['map_bytes_per_step_measured'])}", "—", cmd],
            [f"SDXL edit step vs LEDITS++ (`LEditsPPPipelineStableDiffusionXL`), same weights, {p['size']} px",
             f"p2pz lockstep step **{x['lockstep_step_vs_ledits_step']:.2f}×** a LEDITS++ edit step "
             f"(guided step alone {x['guided_step_vs_ledits_step']:.2f}×); peak {_gb(x['peak_lockstep_bytes'])} vs "
             f"{_gb(x['ledits_peak_bytes'])}",
             f"LEDITS++ edit step {x['ledits_edit_step_s']:.1f} s, inversion step {x['ledits_inversion_step_s']:.1f} s",
             "—", cmd]]
    return out


def render(results: list[dict]) -> str:
    lines = ["| what | figure | baseline (same run) | target | command |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join(lines) + "\n"


METHODS = {"A": "A · word swap, no guidance", "D": "D · sentence bank, no guidance",
           "E": "E · bank + cross-attention guidance (full method)", "E'": "E′ · E with plain DDIM inversion (λ = 0)",
           "E@word": "E@word · E with Δ_token at the caption's word only (`--delta-at word`)",
           "E@word+pad": "E@word+pad · E@word plus Δ's padding rows (`--delta-at word+pad`)"}
EDIT_LABELS = {"circle-to-square": "circle → square", "red-to-blue": "red → blue", "day-to-night": "day → night",
               "triangle-to-star": "triangle → star"}


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def render_ablation(results: list[dict]) -> str:
    """The README's shapes-world ablation table (``bench/shapes_ablation.py``), between ``<!-- ablation:begin -->``
    and ``<!-- ablation:end -->``."""
    runs = [r for r in results if r["benchmark"] == "shapes_ablation"]
    if not runs:
        return ""
    r = runs[-1]
    lines = ["| edit | method | edit success | structure kept (mask IoU) | background change | other attributes kept |",
             "|---|---|---|---|---|---|"]
    for edit, e in r["edits"].items():
        for m, sc in e["methods"].items():
            bg = "—" if sc["background_change"] is None else f"{sc['background_change']:.4f}"
            lines.append(f"| {EDIT_LABELS.get(edit, edit)} | {METHODS.get(m, m)} | **{_pct(sc['success'])}** | "
                         f"{sc['structure_iou']:.3f} | {bg} | {_pct(sc['kept'])} |")
        sweeps = [("E", e.get("xa_sweep", {}))] + [(k.removeprefix("xa_sweep_"), v) for k, v in e.items()
                                                   if k.startswith("xa_sweep_")]
        for method, sweep in sweeps:  # E (or E@word…) at other guidance strengths than the paper's 0.1
            for x, sc in sweep.items():
                bg = "—" if sc["background_change"] is None else f"{sc['background_change']:.4f}"
                lines.append(f"| {EDIT_LABELS.get(edit, edit)} | {method} at λ_xa = {float(x):g} (paper: 0.1) | "
                             f"**{_pct(sc['success'])}** | {sc['structure_iou']:.3f} | {bg} | {_pct(sc['kept'])} |")
    p = r["params"]
    lines.append("")
    recon = "; ".join(f"{EDIT_LABELS.get(k, k)}: {e.get('psnr_regularized', 0):.1f} dB regularized"
                      + (f", {e['psnr_plain']:.1f} dB plain" if "psnr_plain" in e else "")
                      for k, e in r["edits"].items())
    lines.append(f"{p['n']} held-out images per edit, {p['steps']} DDIM steps, {p['bank_size']}-sentence template "
                 f"banks. Reconstruction PSNR after inversion — {recon}.")
    t = r.get("text_to_image")
    if t:
        lines.append(f"Text-to-image on {t['n']} held-out captions ({t['steps']} steps, CFG {t['guidance_scale']:g}): "
                     f"shape {_pct(t['shape'])}, colour {_pct(t['colour'])}, background {_pct(t['background'])}.")
    pr = r.get("placement_run")
    if pr:
        lines.append(f"The E@word rows (the token-aligned direction, docs/algorithm.md §13) come from a second run on "
                     f"the same images and seeds, which measured E again as its baseline ({pr['note']}): "
                     f"`{pr['command']}` ({pr['wall_s'] / 60:.0f} min).")
    tr = r.get("triangle_run")
    if tr:
        lines.append(f"triangle → star (issue #36's edit between two other shapes) comes from a third run: "
                     f"`{tr['command']}` ({tr['wall_s'] / 60:.0f} min).")
    st = r.get("student")
    if st:
        lines.append(f"Student distilled from {st.get('kept_pairs', st['pairs'])} of {st['pairs']} teacher pairs "
                     f"({st['edit']}, kept by the parser), {st['steps']} steps: edit success "
                     f"{_pct(st['success'])} = {st['ratio_to_teacher']:.2f} × the teacher's {_pct(st['teacher_success'])}, "
                     f"{st['latency_ratio']:.0f}× faster than the teacher per image"
                     + (f" (run alone: `{r['student_run']['command']}`, {r['student_run']['wall_s'] / 60:.0f} min)."
                        if r.get("student_run") else "."))
    extra = "".join(f" --{k.replace('_', '-')} {p[k]}" for k in ("student_pairs", "student_steps") if k in p)
    if "xa_sweep" in p:
        extra += f" --xa-sweep '{p['xa_sweep']}'"
    lines.append(f"Command: `python bench/shapes_ablation.py --n {p['n']} --steps {p['steps']} --bank-size "
                 f"{p['bank_size']}{extra if 'student_pairs' in p else ' --student-pairs 0'}` ({r['wall_s'] / 60:.0f} min on "
                 f"{r['machine'].get('cpu_count')} CPU cores).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else HERE / "results.json"
    data = json.loads(path.read_text())
    print(render_ablation(data) if "--ablation" in sys.argv else render(data), end="")
