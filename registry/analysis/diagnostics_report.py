"""How ``p2pz direction inspect`` shows its :class:`~registry.analysis.diagnostics.Diagnostics`: a one-screen text
summary and a self-contained HTML report with a token-profile plot and the stability curve."""

from __future__ import annotations

import base64
import html
import io

from p2pz.store.lazy import numpy as np

from .diagnostics import PROFILE_HEAD, Diagnostics
from .statistics import TARGET_STABILITY


def summary(d: Diagnostics) -> str:
    """A one-screen text summary."""
    st = d.stability
    lines = [f"{d.direction}: {d.source} → {d.target} (encoder {d.encoder[:12]})",
             "stability        " + ("not computed (see below)" if st is None else
                                    f"{st['mean']:.4f} ± {st['sd']:.4f} over {st['splits']} splits (halves of "
                                    f"≈ {st['source_half']:.4g} and {st['target_half']:.4g} sentences, effective "
                                    f"{st['half_sizes']:.4g}); key {d.key_stability['mean']:.4f}"),
             "bank size for 0.95 " + ("n/a" if d.sentences_for_095 is None else
                                      f"≈ {d.sentences_for_095:.0f} sentences per bank"),
             "word swap        " + ("n/a (model not available)" if d.word_swap_cosine is None else
                                    f"cosine {d.word_swap_cosine:.4f}, norm ratio {d.word_swap_norm_ratio:.3f}"),
             f"token profile    BOS {d.token_profile[0]:.3g}, max {max(d.token_profile):.3g}, "
             f"{100 * d.token_energy_head:.1f} % of the energy in the first {PROFILE_HEAD} positions"]
    for part, profile in d.token_profiles.items():  # SDXL: each encoder's share of Δ
        energy = sum(x * x for x in profile)
        lines.append(f"  {part:<15}max {max(profile):.3g}, ‖Δ‖ {energy ** 0.5:.4g}")
    for side in ("source", "target"):
        b = d.banks[side]
        na = lambda v, f="{}": "n/a" if v is None else f.format(v)  # noqa: E731
        made = " ".join(x for x in (b.get("generator"), b.get("template_kind")) if x)  # "templates scene"
        if b.get("template_kind_source"):
            made += f" ({b['template_kind_source']})"
        lines.append(f"{side:<7}{b['bank']:>10}  {made + ', ' if made else ''}{b['size']} sentences, "
                     f"{na(b['duplicates'])} near-duplicates, diversity {na(b['diversity'], '{:.3f}')}, "
                     f"truncated {na(b['truncated'])}, leakage {len(b['leakage'])}")
        for s in b["leakage"][:3]:
            lines.append(f"         leak: {s}")
    if d.neighbours:
        lines.append("neighbours       " + ", ".join(f"{n['direction']} {n['cosine']:.3f}" for n in d.neighbours))
    if d.unavailable:
        lines.append("not computed")
        for figure, why in d.unavailable.items():
            lines.append(f"  {figure}: {why}")
    lines.append("checks")
    for c in d.checks:
        lines.append(f"  {'ok  ' if c.status == 'ok' else 'WARN'}  {c.name:<20} {c.value!s:<10} {c.threshold}"
                     + (f"  — {c.note}" if c.status == "warn" and c.note else ""))
    return "\n".join(lines)


def figure_png(fig) -> str:
    """A matplotlib figure as a ``data:`` PNG URL (for self-contained HTML)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_html(d: Diagnostics) -> str:
    """One self-contained HTML file: the summary tables, a token-profile plot and a stability curve (PNG inside)."""
    import matplotlib  # heavy: only when a report is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib

    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.bar(range(len(d.token_profile)), d.token_profile, color="#4a7bb7")
    ax.set_xlabel("token position")
    ax.set_ylabel("‖Δ[i]‖")
    ax.set_title("token profile")
    profile_png = figure_png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    xs = [p["sentences"] for p in d.stability_curve]
    ax.plot(xs, [p["split_half"] for p in d.stability_curve], "o", label="measured (split-half)")
    r = d.stability["mean"] if d.stability else 0.0
    n_half = d.stability["half_sizes"] if d.stability else 0.0
    if r > 0 and xs:
        grid = np.linspace(max(1.0, min(xs) / 2), max(xs + [d.sentences_for_095 or 0]) * 1.2, 100)
        k = grid / (2 * n_half)
        ax.plot(grid, k * r / (1 + (k - 1) * r), "-", color="#999", label="Spearman–Brown")
    ax.axhline(TARGET_STABILITY, color="#c44", lw=0.8, ls="--", label="0.95")
    ax.set_xlabel("sentences per bank")
    ax.set_ylabel("split-half cosine")
    ax.legend(fontsize=8)
    ax.set_title("stability")
    curve_png = figure_png(fig)
    plt.close(fig)
    esc = html.escape
    rows = "".join(f"<tr class='{c.status}'><td>{esc(c.name)}</td><td>{c.status}</td><td>{esc(str(c.value))}</td>"
                   f"<td>{esc(c.threshold)}</td><td>{esc(c.note)}</td></tr>" for c in d.checks)
    leaks = "".join(f"<li><b>{side}</b>: {esc(s)}</li>" for side in ("source", "target")
                    for s in d.banks[side]["leakage"])
    near = "".join(f"<tr><td>{esc(n['direction'])}</td><td>{n['cosine']:.4f}</td></tr>" for n in d.neighbours)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(d.direction)} — p2pz inspect</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
tr.warn td{{background:#fde8e8}}pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>{esc(d.direction)}</h1><p>{esc(d.source)} → {esc(d.target)}, encoder <code>{d.encoder[:12]}</code></p>
<pre>{esc(summary(d))}</pre>
<h2>Checks</h2><table><tr><th>check</th><th>status</th><th>value</th><th>threshold</th><th>note</th></tr>{rows}</table>
<h2>Token profile</h2><img alt="token profile" src="{profile_png}">
<h2>Stability</h2><img alt="stability curve" src="{curve_png}">
<h2>Leakage</h2><ul>{leaks or '<li>none</li>'}</ul>
<h2>Nearest directions</h2><table>{near or '<tr><td>none</td></tr>'}</table>
</body></html>
"""
