"""Captioning shapes-world images (the shapes model's stand-in for BLIP, algorithm §2).

An image p2pz rendered or generated carries its caption in a PNG text chunk (``p2pz:caption``, written by
:func:`editor.caption.png_info`): that caption is used as recorded. Any other image is read by the parser
(:mod:`editor.shapes.parse`) and described in plain English ("a small red circle in the center on a white
background"). The shapes snapshot's ``captioner/captioner.json`` (``{"kind": "shapes-parser"}``) selects this
captioner, so ``p2pz edit --model p2pz/shapes IMAGE`` needs no ``--caption``.
"""

from __future__ import annotations

from .parse import parse
from .world import SIZE, describe

KIND = "shapes-parser"


class ShapesCaptioner:
    """Recorded caption when the image carries one, else the parser's description."""

    def __call__(self, images) -> list[str]:
        from ..caption import recorded_caption  # lazy: torch

        out = []
        for img in images:
            text = recorded_caption(img)
            if text is None:
                small = img.convert("RGB")
                if small.size != (SIZE, SIZE):
                    from PIL import Image  # lazy: PIL

                    small = small.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
                p = parse(small)
                text = describe(p.shape, p.colour, p.background, p.size, p.position)
            out.append(text)
        return out
