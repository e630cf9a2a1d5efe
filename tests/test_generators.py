import pytest

from generators import (
    BankDraft, FileGenerator, GeneratorError, TemplateFileGenerator, TemplateGenerator, bank_sha256,
    contains_concept, get_generator,
)
from generators.templates import article, combinations


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
