"""Generate ``docs/cli.md`` from the CLI's own ``--help`` texts: ``python -m registry.clidoc > docs/cli.md``.

A test checks the committed file equals this output, so the reference can never drift from the code.
"""

from __future__ import annotations

import click

from .cli import main


def _walk(cmd: click.Command, path: list[str]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], path + [name])


def render() -> str:
    out = ["# p2pz command line reference", "",
           "Generated from `--help` by `python -m registry.clidoc > docs/cli.md`; "
           "`tests/test_docs.py` checks it is current.", ""]
    for path, cmd in _walk(main, ["p2pz"]):
        ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100)
        out += [f"## {' '.join(path)}", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
