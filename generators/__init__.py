"""Sentence-bank generators (architecture §4). Knows nothing of the store or the registry.

Every generator implements ``generate(concept, n, *, seed) -> BankDraft``; :func:`get_generator` builds
one from a kind name and its options.
"""

from .base import BankDraft, Generator, GeneratorError, bank_sha256, check_concept, contains_concept, normalize_sentences
from .file import FileGenerator
from .templates import KINDS as TEMPLATE_KINDS
from .templates import TemplateFileGenerator, TemplateGenerator, choose_kind

GENERATOR_KINDS = ("templates", "file", "llm")


def get_generator(kind: str = "templates", **options) -> Generator:
    """Build a generator: ``templates`` (``template_kind=auto|object|style|attribute|scene``, default auto:
    chosen from the concept by :func:`generators.templates.choose_kind`; or ``template_file=``),
    ``file`` (``path=``), ``llm`` (:class:`generators.llm.LLMGenerator` fields: ``model``, ``base_url``,
    ``temperature``, ``template_kind``, ``concurrency``, ``cache``, ``progress``, …)."""
    if kind == "templates":
        if options.get("template_file"):
            return TemplateFileGenerator(options["template_file"])
        return TemplateGenerator(options.get("template_kind") or "auto")
    if kind == "llm":
        from .llm import LLMGenerator

        fields = set(LLMGenerator.__dataclass_fields__) - {"kind"}
        opts = {k: v for k, v in options.items() if k in fields and v is not None}
        return LLMGenerator(**opts)
    if kind == "file":
        if not options.get("path"):
            raise GeneratorError("the file generator needs a file: pass --file PATH (one sentence per line)")
        return FileGenerator(options["path"])
    raise GeneratorError(f"unknown generator {kind!r}; choose one of {', '.join(GENERATOR_KINDS)}")


__all__ = [
    "BankDraft", "Generator", "GeneratorError", "FileGenerator", "TemplateGenerator", "TemplateFileGenerator",
    "bank_sha256", "check_concept", "contains_concept", "normalize_sentences", "get_generator",
    "GENERATOR_KINDS", "TEMPLATE_KINDS", "choose_kind",
]
