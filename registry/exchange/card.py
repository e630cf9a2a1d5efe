"""The model card (``README.md``) of a Hub repo of p2pz directions, generated from its index (:mod:`.hub`).

YAML metadata the Hub indexes: ``library_name: p2pz``, ``tags`` (p2pz, pix2pix-zero, edit-direction and the
directions' own tags) and ``base_model`` (the model ids of the text encoders the directions were made with). The
body: one table row per direction version (source → target, ‖Δ‖, scores, the text-side diagnostics summary of
``p2pz direction inspect``, a preview where one exists), then how to
pull it with p2pz and how to use a direction without p2pz (``safetensors`` + diffusers). No token, URL credential
or local path ever enters the card.
"""

from __future__ import annotations

import json


def _yaml_list(items: list[str]) -> str:
    return "".join(f"\n- {json.dumps(i, ensure_ascii=False)}" for i in items) if items else " []"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _diagnostics(diag: dict | None) -> str:
    """One cell: split-half stability, sentences for 0.95, word-swap cosine, and the checks that warn."""
    if not diag:
        return ""
    if "unavailable" in diag:
        return "not computed"
    parts = []
    if "stability" in diag:
        parts.append(f"stability {diag['stability']:.2f}")
    if "sentences_for_095" in diag:
        parts.append(f"{diag['sentences_for_095']} sentences for 0.95")
    if "word_swap_cosine" in diag:
        parts.append(f"word-swap cos {diag['word_swap_cosine']:.2f}")
    warns = diag.get("warnings") or []
    parts.append(f"{diag.get('checks_ok', 0)} checks ok" + (f", warns: {', '.join(warns)}" if warns else ""))
    return "; ".join(parts)


def model_card(repo_id: str, index) -> str:
    """``README.md`` for ``repo_id`` holding ``index``'s directions."""
    models = sorted({e.model for e in index.encoders if "/" in e.model and not e.model.startswith(("/", "."))})
    tags = ["p2pz", "pix2pix-zero", "edit-direction", "text-embedding-direction"]
    tags += sorted({t for d in index.directions for t in d.tags} - set(tags))[:50]
    head = f"---\nlibrary_name: p2pz\ntags:{_yaml_list(tags)}\n"
    if models:
        head += f"base_model:{_yaml_list(models)}\n"
    head += "---\n"
    rows = ["| direction | edit | model | ‖Δ‖ | scores | diagnostics | preview |", "|---|---|---|---|---|---|---|"]
    for d in sorted(index.directions, key=lambda d: (d.name, d.version)):
        s = d.summary
        edit = f"{s.get('source', '?')} → {s.get('target', '?')}" if d.kind == "pair" else "combination of " + ", ".join(
            f"{c.weight:g}·{c.ref}" for c in d.components or ())
        scores = ", ".join(f"{k} {v:.3g}" for k, v in sorted(s.get("scores", {}).items()))
        if scores:
            scores += f" ({s.get('n_images')} images)"
        preview = (f"![source]({s['preview']}/source_thumb.png) ![edit]({s['preview']}/edit_thumb.png)"
                   if s.get("preview") else "")
        rows.append(f"| `{_cell(d.ref)}`{' (deprecated)' if d.deprecated else ''} | {_cell(edit)} | "
                    f"{_cell(s.get('model', ''))} | {s.get('norm', '')} | {_cell(scores) or '—'} | "
                    f"{_cell(_diagnostics(s.get('diagnostics'))) or '—'} | {preview} |")
    first = min(index.directions, key=lambda d: (d.name, d.version)) if index.directions else None
    example = first.file if first else "directions/NAME/1.safetensors"
    sdxl = any(e.family == "sdxl" for e in index.encoders)
    body = f"""
# {repo_id.split('/')[-1]}: p2pz edit directions

Text-embedding edit directions for [pix2pix-zero](https://pix2pixzero.github.io/) image editing, shared with
[p2pz](https://pypi.org/project/p2pz/): each direction is Δ = mean(target sentences) − mean(source sentences) under
the model's text encoder, versioned and immutable, with its sentence banks (`banks/`) and provenance (`p2pz.json`:
the sha256 of every file).

{len(index.directions)} direction version(s):

{chr(10).join(rows)}

## Pull into a p2pz registry

```bash
p2pz pull hf://{repo_id}            # everything, every hash checked, all or nothing
p2pz pull hf://{repo_id}@REVISION NAME   # one direction at a commit, tag or branch
p2pz edit photo.jpg --direction {first.ref if first else 'NAME'}
```

## Use a direction without p2pz

```python
import torch
from diffusers import StableDiffusion{'XL' if sdxl else ''}Pipeline
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

d = load_file(hf_hub_download("{repo_id}", "{example}"))
delta = d["delta"]  # [1, 77, D]: add it to the prompt embedding{'''; SDXL: also d["delta_pooled"] [1, 1280]''' if sdxl else ''}
pipe = StableDiffusion{'XL' if sdxl else ''}Pipeline.from_pretrained("{models[0] if models else 'MODEL'}")
{'''emb, neg, pooled, neg_pooled = pipe.encode_prompt("a photo of a cat", do_classifier_free_guidance=True)
image = pipe(prompt_embeds=emb + delta, pooled_prompt_embeds=pooled + d["delta_pooled"],
             negative_prompt_embeds=emb, negative_pooled_prompt_embeds=pooled).images[0]''' if sdxl else
'''emb, _ = pipe.encode_prompt("a photo of a cat", "cpu", 1, False)
image = pipe(prompt_embeds=emb + delta, negative_prompt_embeds=emb).images[0]'''}
```

The safetensors metadata of each direction file names its encoder fingerprint and model, the two banks' sha256,
the scale and the content hash (`sha256:…`, the direction's identity in every p2pz registry).
"""
    return head + body
