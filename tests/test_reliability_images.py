"""Images given to ``p2pz edit``: every bad input is one clear line, good ones in odd modes are converted right,
and one bad image does not stop a batch (issue #6, item 1)."""

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2pz.editor.errors import ImageError
from p2pz.editor.image import load_image
from p2pz.registry import Registry
from p2pz.registry.cli import main


@pytest.fixture
def db(db_url, tiny_model):
    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=10)
    reg.close()
    return db_url


def run_edit(db, *paths, out, extra=()):
    return CliRunner().invoke(main, ["--db", db, "edit", *map(str, paths), "--direction", "cat-to-dog", "--steps", "2",
                                     "--caption", "a cat", "--out", str(out), *extra])


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_files_are_clear_one_line_errors(tmp_path):
    good = Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8))
    (tmp_path / "trunc.png").write_bytes(png_bytes(good)[:200])
    buf = io.BytesIO()
    good.save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[:300])
    (tmp_path / "text.png").write_text("this is not an image")
    for name, msg in [("trunc.png", "not a readable image"), ("trunc.jpg", "not a readable image"),
                      ("text.png", "not a readable image"), ("missing.png", "does not exist")]:
        with pytest.raises(ImageError, match=msg) as err:
            load_image(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)


def test_decompression_bombs_stay_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 M pixels, a few hundred KB on disk
    assert bomb.stat().st_size < 5_000_000
    with pytest.raises(ImageError, match="decompression-bomb limit"):
        load_image(bomb)
    assert Image.MAX_IMAGE_PIXELS is not None


def test_odd_modes_are_converted_correctly(tmp_path):
    arr16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    img = load_image(tmp_path / "deep.png")
    assert img.mode == "RGB" and img.getpixel((63, 63))[0] == round(arr16[63, 63] / 65535 * 255)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    r, g, b = load_image(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60
    assert load_image(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4))
    pal.putpalette([10, 200, 30] + [0] * 765)
    assert load_image(pal).getpixel((1, 1)) == (10, 200, 30)
    assert load_image(Image.new("RGBA", (4, 4), (0, 0, 255, 255))).getpixel((0, 0)) == (0, 0, 255)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display upright
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "rot.jpg")
    assert upright.size == (20, 40)
    top = upright.getpixel((10, 5))
    assert top[2] > 200 and top[0] < 60  # the blue half is on top after the rotation


def test_batch_with_odd_and_bad_images(db, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(folder / "tiny.png")
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    (folder / "broken.png").write_text("nope")
    r = run_edit(db, folder, out=tmp_path / "out")
    assert r.exit_code == 1 and "1 of 3 images failed" in r.stderr
    assert "broken.png" in r.stderr and "animated (2 frames)" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["anim.gif__cat-to-dog@1.png",  # not a .png input
                                                                    "tiny__cat-to-dog@1.png"]


def test_unwritable_output_is_reported(db, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = run_edit(db, tmp_path / "a.png", out=blocker / "sub")
    assert r.exit_code == 1 and "a.png" in r.stderr and "1 of 1 images failed" in r.stderr
    r = CliRunner().invoke(main, ["--db", db, "edit", str(tmp_path / "a.png"), "--direction", "cat-to-dog",
                                  "--steps", "2", "--caption", "a cat", "--out", str(tmp_path / "ok"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["ok"]


def test_folder_without_images(db, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    r = run_edit(db, empty, out=tmp_path / "out")
    assert r.exit_code == 1 and r.stderr.startswith("error: folder") and "holds no images" in r.stderr
