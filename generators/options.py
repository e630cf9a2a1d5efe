"""Typed options of the sentence-bank generators: one frozen dataclass per kind, validated when built.

This is the one place that knows which options each generator takes. The front ends (the CLI's flags, the web
API's bodies, the Python facade's keywords) build a :class:`BankOptions` once, with :meth:`BankOptions.parse` or
a class directly; everything below them (drafting, ``build-many``'s workers, the Ray engine's wire format) passes
the typed object on. An option the kind does not take is an error naming the ones it does, never dropped.

Runtime wiring that is not an option (the LLM reply cache, a token counter, a progress callback) is given to
:func:`make_generator` by the caller, not stored here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from .base import Generator, GeneratorError
from .file import FileGenerator
from .llm import LLMGenerator
from .templates import KINDS as TEMPLATE_KINDS
from .templates import TemplateFileGenerator, TemplateGenerator


@dataclass(frozen=True)
class BankOptions:
    """What every generator kind's options share: the kind's name (``generator``) and the wire format."""

    generator: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}  # another keyword a front end may use → the field

    @staticmethod
    def parse(generator: str = "templates", **given) -> "BankOptions":
        """The options of ``generator`` from keywords; None values count as not given. An unknown generator or
        an option it does not take is a :class:`GeneratorError` (one line, naming what it takes)."""
        cls = KINDS.get(generator)
        if cls is None:
            raise GeneratorError(f"unknown generator {generator!r}; choose one of {', '.join(KINDS)}")
        given = {cls.aliases.get(k, k): v for k, v in given.items() if v is not None}
        takes = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - takes)
        if unknown:
            raise GeneratorError(f"the {generator} generator does not take {', '.join(unknown)}; it takes "
                                 f"{', '.join(sorted(takes))}")
        return cls(**given)

    def to_wire(self) -> dict:
        """A JSON-able dict (what crosses to an engine's worker), read back by :meth:`from_wire`."""
        return {"generator": self.generator, **dataclasses.asdict(self)}

    @staticmethod
    def from_wire(data: dict) -> "BankOptions":
        data = dict(data)
        return BankOptions.parse(data.pop("generator"), **data)


@dataclass(frozen=True)
class TemplateOptions(BankOptions):
    """``templates``: a built-in template set (``template_kind``: auto chooses from the concept's words,
    :func:`generators.templates.choose_kind`) or the user's own template file (``{}`` = the concept)."""

    generator: ClassVar[str] = "templates"
    aliases: ClassVar[dict[str, str]] = {"kind": "template_kind"}
    template_kind: str = "auto"
    template_file: str | None = None

    def __post_init__(self):
        if self.template_kind not in ("auto", *TEMPLATE_KINDS):
            raise GeneratorError(f"unknown template kind {self.template_kind!r}; choose auto or one of "
                                 f"{', '.join(TEMPLATE_KINDS)}")


@dataclass(frozen=True)
class FileOptions(BankOptions):
    """``file``: the sentences of a text file, one per line."""

    generator: ClassVar[str] = "file"
    aliases: ClassVar[dict[str, str]] = {"file": "path"}
    path: str = ""

    def __post_init__(self):
        if not self.path:
            raise GeneratorError("the file generator needs a file: pass --file PATH (one sentence per line)")
        object.__setattr__(self, "path", str(self.path))


@dataclass(frozen=True)
class LLMOptions(BankOptions):
    """``llm``: an OpenAI-compatible chat server (:class:`generators.llm.LLMGenerator`; None: its default).
    ``tokenizer_model`` is the SD model whose tokenizer checks sentence lengths (the registry loads it)."""

    generator: ClassVar[str] = "llm"
    aliases: ClassVar[dict[str, str]] = {"llm_model": "model", "kind": "template_kind"}
    model: str | None = None
    base_url: str | None = None
    temperature: float | None = None
    template_kind: str | None = None
    batch: int | None = None
    concurrency: int | None = None
    timeout: float | None = None
    max_retries: int | None = None
    max_requests: int | None = None
    max_total_tokens: int | None = None
    use_cache: bool = True
    tokenizer_model: str | None = None

    def generator_kwargs(self) -> dict:
        """The :class:`~generators.llm.LLMGenerator` fields these options set."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        out.pop("tokenizer_model", None)
        return out

    def __post_init__(self):
        LLMGenerator(**self.generator_kwargs())  # its own checks: temperature, prompt kind, counts


KINDS: dict[str, type[BankOptions]] = {c.generator: c for c in (TemplateOptions, FileOptions, LLMOptions)}


def make_generator(options: BankOptions, **runtime) -> Generator:
    """The generator ``options`` describe. ``runtime``: the LLM generator's wiring (``cache``, ``token_counter``,
    ``token_counter_name``, ``progress``); other kinds take none."""
    if isinstance(options, LLMOptions):
        return LLMGenerator(**options.generator_kwargs(), **runtime)
    if runtime:
        raise GeneratorError(f"the {options.generator} generator takes no {', '.join(sorted(runtime))}")
    if isinstance(options, FileOptions):
        return FileGenerator(options.path)
    if isinstance(options, TemplateOptions):
        if options.template_file:
            return TemplateFileGenerator(options.template_file)
        return TemplateGenerator(options.template_kind)
    raise GeneratorError(f"not a generator's options: {type(options).__name__}")
