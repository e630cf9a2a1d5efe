"""Generate ``docs/cli.md`` from the CLI's own ``--help`` texts: ``python -m p2pz.registry.cli.doc > docs/cli.md``.

A test checks the committed file equals this output, so the reference can never drift from the code.
"""

from __future__ import annotations

import click

from . import main


def _walk(cmd: click.Command, path: list[str], parent: click.Context | None = None):
    # Contexts are chained as in a real invocation, so inherited settings (``-h``) show the same way.
    ctx = click.Context(cmd, info_name=path[-1], parent=parent, terminal_width=100, max_content_width=100,
                        **(cmd.context_settings if parent is None else {}))
    yield path, cmd, ctx
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], path + [name], ctx)


def render() -> str:
    out = ["# p2pz command line reference", "",
           "Generated from `--help` by `python -m p2pz.registry.cli.doc > docs/cli.md`; "
           "`tests/test_docs.py` checks it is current.", ""]
    for path, cmd, ctx in _walk(main, ["p2pz"]):
        out += [f"## {' '.join(path)}", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
