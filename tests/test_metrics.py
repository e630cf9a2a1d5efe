"""Image metrics (editor.metrics) on tiny random models built here: identities, independent oracles (torchmetrics'
CLIPScore, a hand-written key path through the ViT), masks."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.numerics import assert_close_relative
from p2pz.editor.metrics import (LPIPS, ClipScorer, StructureDistance, background_metrics, decode_rle, load_mask,
                            lpips_linear_weights)


def _image(seed, size=64):
    rng = np.random.RandomState(seed)
    return Image.fromarray((np.kron(rng.rand(8, 8, 3), np.ones((size // 8, size // 8, 1))) * 255).astype(np.uint8))


def test_clip_score_matches_torchmetrics(tiny_clip):
    from torchmetrics.functional.multimodal import clip_score

    scorer = ClipScorer.from_pretrained(str(tiny_clip))

    class Features(torch.nn.Module):
        """torchmetrics 1.9 expects feature tensors from get_*_features; transformers 5 returns output records."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.config = model.config

        def get_image_features(self, *args, **kwargs):
            return self.model.get_image_features(*args, **kwargs).pooler_output

        def get_text_features(self, *args, **kwargs):
            return self.model.get_text_features(*args, **kwargs).pooler_output

    oracle = Features(scorer.model)
    images = [_image(i) for i in range(4)]
    texts = ["a photo of a dog", "a photo of a cat", "a dog on a sofa", "a red car"]
    ours = scorer.score(images, texts)
    for im, text, value in zip(images, texts, ours):
        tensor = torch.from_numpy(np.array(im)).permute(2, 0, 1)
        theirs = float(clip_score(tensor, text, model_name_or_path=lambda: (oracle, scorer.processor)))
        # two implementations (ours batched, torchmetrics one image at a time): rounding, relative to the score
        assert value == pytest.approx(theirs, rel=1e-4)
    acc = scorer.accuracy(images, "a photo of a cat", "a photo of a dog")
    img, txt = scorer.image_embeds(images), scorer.text_embeds(["a photo of a cat", "a photo of a dog"])
    assert acc == [float(s[1] > s[0]) for s in img @ txt.T]
    same = scorer.directional(images, images, "a photo of a cat", "a photo of a dog")
    assert all(v == 0 for v in same)  # no image change: no direction


def test_structure_distance_is_zero_symmetric_and_uses_the_last_blocks_keys(tiny_vit):
    from transformers import ViTModel

    sd = StructureDistance.from_pretrained(str(tiny_vit))
    a, b = [_image(1), _image(2)], [_image(3), _image(4)]
    assert sd(a, a) == [0.0, 0.0]
    ab, ba = sd(a, b), sd(b, a)
    assert all(x > 0 for x in ab) and ab == pytest.approx(ba)
    # independent path: the last block's input (hidden_states[-2]) through its own layernorm and key projection
    model = ViTModel.from_pretrained(tiny_vit, add_pooling_layer=False).eval()
    x = torch.stack([((torch.from_numpy(np.asarray(im.resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255)
                       .permute(2, 0, 1)) - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
                     / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) for im in a])
    with torch.no_grad():
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        last = model.layers[-1]
        keys = last.attention.k_proj(last.layernorm_before(hidden))
    assert keys.shape == (2, 17, 32)  # CLS + 4 × 4 patches, 4 heads × 8
    assert_close_relative(sd.keys(a), keys, rel=1e-5)  # our hook vs the layers called by hand: rounding, relative


def test_lpips_with_the_published_linear_layers(alex_backbone):
    assert lpips_linear_weights("alex") is not None, "the lpips wheel ships its linear weights (make installs it)"
    lp = LPIPS.from_weights(alex_backbone)
    lin = torch.load(lpips_linear_weights("alex"), map_location="cpu", weights_only=True)
    assert torch.equal(lp.lins[0].weight, lin["lin0.model.1.weight"])
    a = torch.rand(2, 3, 64, 64) * 2 - 1
    b = torch.rand(2, 3, 64, 64) * 2 - 1
    assert lp(a, a).abs().max() < 1e-6
    d = lp(a, b)
    assert (d > 0).all()
    assert_close_relative(d, lp(b, a), rel=1e-5)  # the two images in the other batch order: rounding, relative
    with pytest.raises(Exception, match="LPIPS backbone weights lack|does not exist"):
        LPIPS.from_weights(alex_backbone.parent / "missing.pth")


def test_background_metrics_ignore_changes_inside_the_mask(alex_backbone, tmp_path):
    lp = LPIPS.from_weights(alex_backbone)
    src = _image(5)
    same = background_metrics(src, src.copy(), lpips=lp)
    assert same["bg_mse"] == 0 and same["bg_ssim"] == pytest.approx(1.0, abs=1e-5) and same["bg_lpips"] == pytest.approx(0, abs=1e-6)
    arr = np.asarray(src).copy()
    arr[16:48, 16:48] = 255 - arr[16:48, 16:48]  # change the middle only
    edit = Image.fromarray(arr)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    inside = background_metrics(src, edit, load_mask(tmp_path / "m.png"), lpips=lp)
    assert inside["bg_mse"] == 0 and inside["bg_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert inside["bg_lpips"] == pytest.approx(0, abs=1e-6)
    whole = background_metrics(src, edit, lpips=lp)
    assert whole["bg_mse"] > 0.01 and whole["bg_ssim"] < 0.99 and whole["bg_lpips"] > 0 and whole["bg_psnr"] < 30


def test_rle_masks_decode_as_pie_bench_does():
    m = decode_rle([5, 3, 10, 2], size=4)
    expected = np.zeros(16, bool)
    expected[5:8] = expected[10:12] = True
    expected = expected.reshape(4, 4)
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = True
    assert (m == expected).all()
    assert decode_rle([5, 100], size=4).sum() == 16  # a run past the end is clipped there
    with pytest.raises(Exception, match="pairs"):
        decode_rle([1, 2, 3])


def test_batched_clip_scores_equal_the_single_metrics(tiny_clip):
    scorer = ClipScorer.from_pretrained(str(tiny_clip))
    src, edit = _image(7), _image(8)
    together = scorer.all_scores(src, edit, "a photo of a cat", "a photo of a dog")
    assert together["clip_acc"] == scorer.accuracy([edit], "a photo of a cat", "a photo of a dog")[0]
    # one batched pass against single calls: rounding, relative to each score (a score of 0–100; a cosine)
    assert together["clip_score"] == pytest.approx(scorer.score([edit], ["a photo of a dog"])[0], rel=1e-5)
    assert together["clip_directional"] == pytest.approx(
        scorer.directional([src], [edit], "a photo of a cat", "a photo of a dog")[0], rel=1e-4, abs=1e-5)
