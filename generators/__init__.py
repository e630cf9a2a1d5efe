"""Sentence-bank generators (DESIGN §4). Knows nothing of the store or the registry.

Every generator implements ``generate(concept, n, *, seed) -> BankDraft``; :func:`get_generator` builds
one from a kind name and its options.
"""

from .base import BankDraft, Generator, GeneratorError, bank_sha256, check_concept, contains_concept, normalize_sentences
from .file import FileGenerator
from .templates import KINDS as TEMPLATE_KINDS
from .templates import TemplateFileGenerator, TemplateGenerator

GENERATOR_KINDS = ("templates", "file")


def get_generator(kind: str = "templates", **options) -> Generator:
    """Build a generator: ``templates`` (``template_kind=object|style|attribute`` or ``template_file=``),
    ``file`` (``path=``)."""
    if kind == "templates":
        if options.get("template_file"):
            return TemplateFileGenerator(options["template_file"])
        return TemplateGenerator(options.get("template_kind") or "object")
    if kind == "file":
        if not options.get("path"):
            raise GeneratorError("the file generator needs a file: pass --file PATH (one sentence per line)")
        return FileGenerator(options["path"])
    raise GeneratorError(f"unknown generator {kind!r}; choose one of {', '.join(GENERATOR_KINDS)}")


__all__ = [
    "BankDraft", "Generator", "GeneratorError", "FileGenerator", "TemplateGenerator", "TemplateFileGenerator",
    "bank_sha256", "check_concept", "contains_concept", "normalize_sentences", "get_generator",
    "GENERATOR_KINDS", "TEMPLATE_KINDS",
]
