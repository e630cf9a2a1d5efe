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
    ``temperature``, ``template_kind``, ``concurrency``, ``cache``, ``progress``, …). An option the kind does
    not take is an error naming the ones it does (None values count as not given)."""
    given = {k for k, v in options.items() if v is not None}
    if kind in GENERATOR_KINDS:
        unknown = sorted(given - _accepted(kind))
        if unknown:
            raise GeneratorError(f"the {kind} generator does not take {', '.join(unknown)}; it takes "
                                 f"{', '.join(sorted(_accepted(kind)))}")
    if kind == "templates":
        if options.get("template_file"):
            return TemplateFileGenerator(options["template_file"])
        return TemplateGenerator(options.get("template_kind") or "auto")
    if kind == "llm":
        from .llm import LLMGenerator

        return LLMGenerator(**{k: v for k, v in options.items() if v is not None})
    if kind == "file":
        if not options.get("path"):
            raise GeneratorError("the file generator needs a file: pass --file PATH (one sentence per line)")
        return FileGenerator(options["path"])
    raise GeneratorError(f"unknown generator {kind!r}; choose one of {', '.join(GENERATOR_KINDS)}")


def _accepted(kind: str) -> set[str]:
    """The options each generator kind takes."""
    if kind == "llm":
        from .llm import LLMGenerator

        return set(LLMGenerator.__dataclass_fields__) - {"kind"}
    return {"templates": {"template_kind", "template_file"}, "file": {"path"}}[kind]


__all__ = [
    "BankDraft", "Generator", "GeneratorError", "FileGenerator", "TemplateGenerator", "TemplateFileGenerator",
    "bank_sha256", "check_concept", "contains_concept", "normalize_sentences", "get_generator",
    "GENERATOR_KINDS", "TEMPLATE_KINDS", "choose_kind",
]
