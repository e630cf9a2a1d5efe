"""The model card (``README.md``) of a Hub repo of p2pz directions, generated from its index (:mod:`.hub`).

YAML metadata the Hub indexes: ``library_name: p2pz``, ``tags`` (p2pz, pix2pix-zero, edit-direction and the
directions' own tags) and ``base_model`` (the model ids of the text encoders the directions were made with). The
body: one table row per direction version (source → target, ‖Δ‖, scores, the text-side diagnostics summary of
``p2pz direction inspect``, a preview where one exists), then how to
pull it with p2pz and how to use a direction without p2pz (``safetensors`` + diffusers). No token, URL credential
or local path ever enters the card (models by :func:`~.hub.public_model`).

Every text that comes from the repo's index or from the registry (names, concepts, tags, models, score names,
warnings) is written inert: control characters dropped, HTML-escaped, and markdown's punctuation backslash-escaped
(no code span, table cell, image or link can be made from data); the only link targets are this card's own
``https:`` URLs and the previews' relative paths.
"""

from __future__ import annotations

import html
import json
import re

from .hub import public_model

_MARKDOWN = re.compile(r"([\\`\[\]()!|:.])")  # code, links, images, cells, autolinks (http:, www.)
_CODE = re.compile(r"[\w.+\-@: ]+")  # what a code span may hold as it is (names, refs, sha256:…)
_RELATIVE = re.compile(r"(?:[\w+\-][\w.+\-]*/)*[\w+\-][\w.+\-]*")


def _yaml_list(items: list[str]) -> str:
    """JSON strings are YAML; ``<``, ``>`` and ``&`` as ``\\u`` escapes, so no HTML is ever in the file."""
    def quoted(item: str) -> str:
        return json.dumps(item).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return "".join(f"\n- {quoted(i)}" for i in items) if items else " []"


def _text(value) -> str:
    """Data as inert markdown text on one line (see the module's docstring)."""
    from p2pz.registry.library.records import printable  # lazy: start-up

    plain = " ".join(printable(value, keep="\t\n").split())
    return html.escape(_MARKDOWN.sub(r"\\\1", plain), quote=True)


def _code(value) -> str:
    """A name or ref as a code span when it is made of name characters only, else as inert text."""
    text = str(value)
    return f"`{text}`" if _CODE.fullmatch(text) else _text(text)


def _link(target: str) -> str | None:
    """``target`` when it is a relative path inside the repo or an ``https:`` URL, else None."""
    return target if _RELATIVE.fullmatch(target) or re.fullmatch(r"https://[\w.\-/]+", target) else None


def _diagnostics(diag: dict | None) -> str:
    """One cell: split-half stability, sentences for 0.95, word-swap cosine, and the checks that warn."""
    if not diag:
        return ""
    if "unavailable" in diag:
        return "not computed"
    parts = []
    if diag.get("stability") is not None:
        parts.append(f"stability {diag['stability']:.2f}")
    if diag.get("sentences_for_095") is not None:
        parts.append(f"{diag['sentences_for_095']} sentences for 0.95")
    if diag.get("word_swap_cosine") is not None:
        parts.append(f"word-swap cos {diag['word_swap_cosine']:.2f}")
    warns = [_text(w) for w in diag.get("warnings") or []]
    parts.append(f"{diag.get('checks_ok') or 0} checks ok" + (f", warns: {', '.join(warns)}" if warns else ""))
    return "; ".join(parts)


def model_card(repo_id: str, index) -> str:
    """``README.md`` for ``repo_id`` holding ``index``'s directions."""
    models = sorted({m for m in (public_model(e.model) for e in index.encoders) if "/" in m})  # Hub ids only
    tags = ["p2pz", "pix2pix-zero", "edit-direction", "text-embedding-direction"]
    tags += sorted({t for d in index.directions for t in d.tags} - set(tags))[:50]
    head = f"---\nlibrary_name: p2pz\ntags:{_yaml_list(tags)}\n"
    if models:
        head += f"base_model:{_yaml_list(models)}\n"
    head += "---\n"
    rows = ["| direction | edit | model | ‖Δ‖ | scores | diagnostics | preview |", "|---|---|---|---|---|---|---|"]
    for d in sorted(index.directions, key=lambda d: (d.name, d.version)):
        s = d.summary
        edit = (f"{_text(s.get('source') or '?')} → {_text(s.get('target') or '?')}" if d.kind == "pair" else
                "combination of " + ", ".join(f"{c.weight:g}·{_text(c.ref)}" for c in d.components or ()))
        scores = ", ".join(f"{_text(k)} {v:.3g}" for k, v in sorted((s.get("scores") or {}).items()))
        if scores:
            scores += f" ({s.get('n_images')} images)"
        shots = [(w, _link(f"{s['preview']}/{w}_thumb.png")) for w in ("source", "edit")] if s.get("preview") else []
        preview = " ".join(f"![{w}]({target})" for w, target in shots if target)
        norm = s.get("norm")
        rows.append(f"| {_code(d.ref)}{' (deprecated)' if d.deprecated else ''} | {edit} | "
                    f"{_text(public_model(s.get('model') or ''))} | {'' if norm is None else f'{norm:g}'} | "
                    f"{scores or '—'} | {_diagnostics(s.get('diagnostics')) or '—'} | {preview} |")
    first = min(index.directions, key=lambda d: (d.name, d.version)) if index.directions else None
    example = first.file if first and _RELATIVE.fullmatch(first.file) else "directions/NAME/1.safetensors"
    shown_ref = first.ref if first and re.fullmatch(r"[\w.+\-@]+", first.ref) else "NAME"
    sdxl = any(e.family == "sdxl" for e in index.encoders)
    body = f"""
# {_text(repo_id.split('/')[-1])}: p2pz edit directions

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
p2pz edit photo.jpg --direction {shown_ref}
```

## Use a direction without p2pz

```python
import torch
from diffusers import StableDiffusion{'XL' if sdxl else ''}Pipeline
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

d = load_file(hf_hub_download("{repo_id}", "{example}"))
delta = d["delta"]  # [1, 77, D]: add it to the prompt embedding{'''; SDXL: also d["delta_pooled"] [1, 1280]''' if sdxl else ''}
# a pair's d["delta_token"] [D], when present: Δ_token, added only at the tokens of its metadata's token_word
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
