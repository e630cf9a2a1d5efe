import pytest

from p2pz.generators import (
    BankDraft, FileGenerator, GeneratorError, TemplateFileGenerator, TemplateGenerator, bank_sha256,
    contains_concept, get_generator,
)
from p2pz.generators.templates import OBJECT_FRAMES, article, choose_kind, combinations, render


@pytest.mark.parametrize("kind,concept", [("object", "cat"), ("object", "owl"), ("object", "ice cream"),
                                          ("object", "r2d2"), ("style", "oil pastel"), ("style", "watercolor painting"),
                                          ("attribute", "glasses"), ("attribute", "a red hat")])
def test_templates_make_1000_unique_sentences_with_the_concept(kind, concept):
    draft = TemplateGenerator(kind).generate(concept, 1000, seed=0)
    assert isinstance(draft, BankDraft)
    assert len(draft.sentences) == 1000
    assert len(set(draft.sentences)) == 1000
    assert all(contains_concept(s, concept) for s in draft.sentences)
    assert all(s[0].isupper() and s.endswith(".") for s in draft.sentences)
    assert all("  " not in s and " ," not in s and " ." not in s for s in draft.sentences)
    assert draft.params["template_kind"] == kind and draft.params["seed"] == 0


def test_templates_have_room_well_beyond_1000():
    for kind in ("object", "style", "attribute"):
        assert combinations(kind, "cat") >= 5000
    assert combinations("scene", "night") >= 1000 and combinations("attribute", "red") >= 1000


# --- template kinds (issue 20 item 6): scene, colour attributes, the automatic choice ------------------------

def _object_sentences(concept: str) -> set[str]:
    """Every sentence the object set can make for ``concept``."""
    from p2pz.generators.templates import ADJECTIVES, PLACES

    return {render("object", concept, f, (a, p)) for f in OBJECT_FRAMES for a in ADJECTIVES for p in PLACES}


@pytest.mark.parametrize("concept", ["night", "day", "winter", "sunset", "fog", "evening"])
def test_scene_kind_makes_1000_distinct_scene_sentences_deterministically(concept):
    draft = TemplateGenerator("scene").generate(concept, 1000, seed=0)
    s = draft.sentences
    assert len(s) == len(set(s)) == 1000
    assert all(contains_concept(x, concept) and x[0].isupper() and x.endswith(".") for x in s)
    assert all("  " not in x and " ," not in x and " ." not in x for x in s)
    assert not set(s) & _object_sentences(concept)
    assert draft.params["template_kind"] == "scene" and draft.params["template_kind_source"] == "given"
    assert TemplateGenerator("scene").generate(concept, 1000, seed=0).sentences == s
    assert TemplateGenerator("scene").generate(concept, 1000, seed=1).sentences != s
    assert not any(x.startswith(("A evening", "A autumn")) for x in s)
    assert any(x == f"{_cap_article(concept)} scene with a lighthouse." for x in
               TemplateGenerator("scene").generate(concept, combinations("scene", concept)).sentences)


def _cap_article(concept: str) -> str:
    a = article(concept)
    return f"{a.capitalize()} {concept}"


def test_scene_sentences_read_as_scenes():
    every = set(TemplateGenerator("scene").generate("night", combinations("scene", "night")).sentences)
    for expected in ("A night scene with a lighthouse.", "A lighthouse in the night.",
                     "A night view of a mountain lake.", "A night scene with a city street.",
                     "A small village in the night.", "A night scene with a red circle.",
                     "A yellow star in the night."):
        assert expected in every, expected
    assert "An evening scene with a lighthouse." in set(
        TemplateGenerator("scene").generate("evening", combinations("scene", "evening")).sentences)


@pytest.mark.parametrize("colour", ["red", "green", "blue", "yellow", "white", "black", "orange", "purple",
                                    "pink", "brown", "gray", "grey", "light blue"])
def test_colour_attributes_use_adjective_frames(colour):
    draft = TemplateGenerator("attribute").generate(colour, 1000, seed=0)
    s = draft.sentences
    assert len(s) == len(set(s)) == 1000
    assert all(contains_concept(x, colour) for x in s)
    assert not any(f"with {colour}" in x for x in s)  # no "A photo of a cat with red …"
    assert all("  " not in x and " ," not in x and " ." not in x and x.endswith(".") for x in s)
    assert not any(" a orange" in x or "A orange" in x for x in s)
    assert draft.params["template_kind"] == "attribute"
    assert TemplateGenerator("attribute").generate(colour, 1000, seed=0).sentences == s
    if colour == "red":
        every = set(TemplateGenerator("attribute").generate("red", combinations("attribute", "red")).sentences)
        for expected in ("A photo of a red car in a quiet garden.", "A red circle on a white background.",
                         "A small red star."):
            assert expected in every, expected
    if colour == "white":
        assert not any("white background" in x for x in s)


def test_other_attributes_keep_the_with_frames():
    s = TemplateGenerator("attribute").generate("glasses", 200, seed=0).sentences
    assert all(" with glasses" in x for x in s)
    hats = TemplateGenerator("attribute").generate("a red hat", 200, seed=0).sentences
    assert all(" with a red hat" in x for x in hats)


@pytest.mark.parametrize("concept,kind", [
    ("day", "scene"), ("night", "scene"), ("Night", "scene"), ("sunset", "scene"), ("winter", "scene"),
    ("fog", "scene"), ("heavy rain", "scene"), ("golden hour", "scene"), ("rainy day", "scene"),
    ("red", "attribute"), ("grey", "attribute"), ("light blue", "attribute"), ("navy blue", "attribute"),
    ("watercolor", "style"), ("oil painting", "style"), ("pixel art", "style"), ("sketch", "style"),
    ("cartoon", "style"), ("anime", "style"), ("van gogh style", "style"), ("oil pastel", "style"),
    ("cat", "object"), ("circle", "object"), ("ice cream", "object"), ("winter coat", "object"),
    ("red hat", "object"), ("glasses", "object"), ("r2d2", "object"),
])
def test_choose_kind(concept, kind):
    assert choose_kind(concept) == kind


def test_no_kind_means_auto_and_is_recorded():
    for concept, kind in (("night", "scene"), ("red", "attribute"), ("watercolor", "style"), ("cat", "object")):
        for gen in (TemplateGenerator(), TemplateGenerator(None), get_generator("templates"),
                    get_generator("templates", template_kind="auto")):
            draft = gen.generate(concept, 50, seed=0)
            assert draft.params["template_kind"] == kind and draft.params["template_kind_source"] == "auto"
            assert draft.sentences == TemplateGenerator(kind).generate(concept, 50, seed=0).sentences
    day = TemplateGenerator().generate("day", 1000, seed=0).sentences
    assert not any("vintage day" in x or x.startswith("A photo of a day") for x in day)
    given = get_generator("templates", template_kind="object").generate("day", 10)
    assert given.params["template_kind"] == "object" and given.params["template_kind_source"] == "given"


def test_existing_banks_keep_their_sentences():
    """The sets unchanged since v1 sample what they sampled before the scene and colour sets came."""
    v1_cat = ["A photo of a vintage cat against a white background.",
              "A detailed photograph of a lovely cat on a frozen lake.", "There is a tiny cat at sunset."]
    assert TemplateGenerator("object").generate("cat", 3, seed=0).sentences == v1_cat
    assert TemplateGenerator().generate("cat", 3, seed=0).sentences == v1_cat
    assert TemplateGenerator("style").generate("oil pastel", 2, seed=0).sentences == [
        "A picture of a train station on a rainy day in the style of oil pastel.",
        "A desert landscape at sunset, in oil pastel style."]
    assert TemplateGenerator("attribute").generate("glasses", 2, seed=0).sentences == [
        "A candid photo of a kitten with glasses on a stone bridge.",
        "A candid photo of a young woman with glasses beside an old stone wall."]


def test_templates_are_deterministic_for_a_seed_and_differ_across_seeds():
    a = TemplateGenerator().generate("cat", 300, seed=1).sentences
    b = TemplateGenerator().generate("cat", 300, seed=1).sentences
    c = TemplateGenerator().generate("cat", 300, seed=2).sentences
    assert a == b
    assert a != c


def test_articles_read_correctly():
    assert article("owl") == "an" and article("cat") == "a" and article("hour") == "an"
    assert article("unicorn") == "a" and article("umbrella") == "an" and article("European car") == "a"
    s = TemplateGenerator().generate("owl", 1000, seed=0).sentences
    assert not any(" a owl" in x or "A owl" in x for x in s)
    assert any("an owl" in x or "An owl" in x for x in s)
    styles = TemplateGenerator("style").generate("oil pastel", 200, seed=0).sentences
    assert not any("a oil" in x.lower() for x in styles)
    assert not any("painting painting" in x for x in TemplateGenerator("style").generate("watercolor painting", 1000).sentences)


def test_too_many_sentences_or_bad_kind_is_a_clear_error():
    with pytest.raises(GeneratorError, match="at most"):
        TemplateGenerator().generate("cat", 10**7)
    with pytest.raises(GeneratorError, match="unknown template kind"):
        TemplateGenerator("colour").generate("cat", 10)
    with pytest.raises(GeneratorError, match="empty"):
        TemplateGenerator().generate("   ", 10)
    with pytest.raises(GeneratorError, match="unknown generator"):
        get_generator("gpt9")


def test_user_template_file(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("A drawing of a {}.\n\nA {} on the moon.\nA drawing of a {}.\n")
    draft = TemplateFileGenerator(f).generate("dog", 10, seed=0)
    assert sorted(draft.sentences) == ["A dog on the moon.", "A drawing of a dog."]
    assert draft.params["duplicates_dropped"] == 1
    (tmp_path / "bad.txt").write_text("no marker here\n")
    with pytest.raises(GeneratorError, match="lack"):
        TemplateFileGenerator(tmp_path / "bad.txt").generate("dog", 10)


def test_file_generator_drops_blanks_and_duplicates_with_counts(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text("a cat on a mat\n\n  a cat   on a mat \nthe cat sleeps\n\n")
    draft = FileGenerator(f).generate("text")
    assert draft.sentences == ["a cat on a mat", "the cat sleeps"]
    assert draft.params["blank_dropped"] == 2 and draft.params["duplicates_dropped"] == 1
    assert draft.params["file"] == "text.txt"


def test_file_generator_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(GeneratorError, match="no sentences"):
        FileGenerator(empty).generate("cat")
    with pytest.raises(GeneratorError, match="does not exist"):
        FileGenerator(tmp_path / "missing.txt").generate("cat")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x80")
    with pytest.raises(GeneratorError, match="UTF-8"):
        FileGenerator(tmp_path / "bin.txt").generate("cat")


def test_bank_sha_is_order_independent_and_content_sensitive():
    assert bank_sha256(["a cat", "b cat"]) == bank_sha256(["b cat", "a cat"])
    assert bank_sha256(["a cat"]) != bank_sha256(["a cat."])


def test_contains_concept_word_boundaries_and_plurals():
    assert contains_concept("Two Cats on a mat", "cat")
    assert contains_concept("the boxes", "box")
    assert not contains_concept("a concatenated string", "cat")


@pytest.mark.parametrize("kind, options, named", [
    ("templates", {"templat_kind": "scene"}, "templat_kind"),
    ("file", {"path": "x.txt", "template_kind": "scene"}, "template_kind"),
    ("llm", {"model": "m", "temprature": 0.5}, "temprature"),
])
def test_an_option_the_generator_does_not_take_is_an_error_not_dropped(kind, options, named):
    from p2pz.generators import GeneratorError, get_generator

    with pytest.raises(GeneratorError) as err:
        get_generator(kind, **options)
    assert named in str(err.value) and "it takes" in str(err.value) and "\n" not in str(err.value)
    quiet = {**{k: None for k in options}, **({"path": "x.txt"} if kind == "file" else {})}
    get_generator(kind, **quiet)  # None means not given
