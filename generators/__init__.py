"""Sentence-bank generators (architecture §4). Knows nothing of the store or the registry.

Every generator implements ``generate(concept, n, *, seed) -> BankDraft``; :func:`get_generator` builds
one from a kind name and its options.
"""

from .base import BankDraft, Generator, GeneratorError, bank_sha256, check_concept, contains_concept, normalize_sentences
from .file import FileGenerator
from .templates import KINDS as TEMPLATE_KINDS
from .options import KINDS, BankOptions, FileOptions, LLMOptions, TemplateOptions, make_generator
from .templates import TemplateFileGenerator, TemplateGenerator, choose_kind

GENERATOR_KINDS = tuple(KINDS)
RUNTIME = ("cache", "token_counter", "token_counter_name", "progress", "api_key")  # the LLM generator's wiring


def get_generator(kind: str = "templates", **options) -> Generator:
    """Build a generator from a kind name and keywords: its options (:mod:`generators.options`: ``templates``
    takes ``template_kind``/``template_file``, ``file`` takes ``path``, ``llm`` the
    :class:`~generators.options.LLMOptions` fields) plus, for ``llm``, its runtime wiring (``cache``,
    ``token_counter``, ``progress``, …). An option the kind does not take is an error naming the ones it does
    (None values count as not given)."""
    runtime = {k: options.pop(k) for k in RUNTIME if options.get(k) is not None}
    return make_generator(BankOptions.parse(kind, **options), **runtime)


__all__ = [
    "BankDraft", "Generator", "GeneratorError", "FileGenerator", "TemplateGenerator", "TemplateFileGenerator",
    "bank_sha256", "check_concept", "contains_concept", "normalize_sentences", "get_generator",
    "GENERATOR_KINDS", "TEMPLATE_KINDS", "choose_kind", "BankOptions", "TemplateOptions", "FileOptions",
    "LLMOptions", "make_generator",
]
