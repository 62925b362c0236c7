"""The README can be followed top to bottom: its shell blocks run, in order, against a served process.

How it works: every ```sh (or ```bash) block of README.md, in order, goes into one bash script
(``set -e``, ``pipefail``: a failing command fails the test), run as a reader would after
`make run` on a fresh clone: against `python -m service serve` on a fresh database, with
``FREYA_DATABASE_URL`` pointing at it (so `make` targets use it too) and ``FREYA_DATA_DIR`` at a
temporary directory. ``curl`` is wrapped: ``localhost:8000`` is this service, and every answer's
status is recorded against the README line that asked for it.

Conventions for README authors (new blocks are covered without touching this file):

* Every request must answer 2xx, unless the README shows the status it expects at the end of the
  command, as a comment: ``curl -s localhost:8000/v1/users/$GRACE   # → 404 (deleted)``. Then the
  status must be exactly that (``->`` works too). A command with several requests expects the
  same of each.
* A block that must not run here (``make run`` itself, a long job such as ``make seed``, a
  placeholder to fill in, settings that need another server) has, on the line just before its
  fence, ``<!-- readme-test: skip: <why> -->``. The reason is required.
* Blocks share one shell: ids kept in variables by one block (``GRACE=$(… | field id)``) are there
  for the next. Write examples that work on a fresh database, in the README's order; never
  assume an id.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.settings import PROJECT_ROOT
from tests.api import start_service

README = PROJECT_ROOT / "README.md"
_FENCE = re.compile(r"^(\s*)```(sh|bash|shell)\s*$")
_SKIP = re.compile(r"^<!--\s*readme-test:\s*skip:\s*(?P<why>\S.*?)\s*-->$")
_SKIP_WITHOUT_REASON = re.compile(r"^<!--\s*readme-test:\s*skip\b")
_EXPECT = re.compile(r"#\s*(?:→|->)\s*(?P<status>[1-5]\d\d)\b")

# Runs before the README's blocks: curl reaches this service and reports each answer's status.
PRELUDE = r"""set -e -o pipefail
shopt -s inherit_errexit
curl() {
    local headers arg args=()
    headers=$(mktemp "$README_CALLS/headers.XXXXXX")
    for arg in "$@"; do
        arg=${arg//localhost:8000/$README_SERVICE}
        args+=("${arg//127.0.0.1:8000/$README_SERVICE}")
    done
    echo "${BASH_LINENO[0]} $headers" >> "$README_CALLS/calls"
    command curl --dump-header "$headers" "${args[@]}"
}
"""


@dataclass
class Command:
    """One shell command of a block: README lines ``first``…``last`` (continuations, multi-line quotes)."""

    first: int
    last: int
    expect: int | None


@dataclass
class Block:
    line: int  # of the opening fence
    lines: list[str]
    skip: str | None
    commands: list[Command] = field(default_factory=list)


def _commands(lines: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    start: int | None = None
    quote: str | None = None
    for offset, text in enumerate(lines):
        number = first_line + offset
        if start is None:
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            start = number
        for position, char in enumerate(text):
            if quote is None and char in "'\"":
                quote = char
            elif char == quote:
                quote = None
            elif quote is None and char == "#" and (position == 0 or text[position - 1].isspace()):
                break  # a comment: quotes in it do not count
        if quote is None and not text.rstrip().endswith("\\"):
            span = lines[start - first_line : offset + 1]
            found = [int(m["status"]) for m in map(_EXPECT.search, span) if m]
            commands.append(Command(start, number, found[-1] if found else None))
            start = None
    assert quote is None, f"README.md:{first_line}: a block ends inside a quoted string"
    assert start is None, f"README.md:{first_line}: a block ends inside a command"
    return commands


def readme_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        before = lines[index - 1].strip() if index else ""
        assert _SKIP.match(before) or not _SKIP_WITHOUT_REASON.match(before), (
            f"README.md:{index}: a skipped block needs its reason: <!-- readme-test: skip: <why> -->"
        )
        skip = m["why"] if (m := _SKIP.match(before)) else None
        indent = fence.group(1)
        end = index + 1
        while lines[end].strip() != "```":
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        block = Block(index + 1, body, skip)
        block.commands = _commands(body, index + 2)
        blocks.append(block)
        index = end + 1
    return blocks


def script_of(blocks: list[Block]) -> tuple[str, dict[int, int]]:
    """The bash script of the blocks that run, and for each of its lines the README line it came from."""
    script = PRELUDE.splitlines()
    origin: dict[int, int] = {}
    for block in blocks:
        if block.skip is not None:
            continue
        script.append(f"# README.md:{block.line}")
        for offset, line in enumerate(block.lines):
            script.append(line)
            origin[len(script)] = block.line + 1 + offset
    return "\n".join(script) + "\n", origin


def answered_status(headers: Path) -> int | None:
    statuses = re.findall(r"^HTTP/\S+ (\d{3})", headers.read_text(errors="replace"), flags=re.MULTILINE)
    return int(statuses[-1]) if statuses else None  # the last: after any 100 Continue


def test_the_parser_reads_commands_expectations_and_skips() -> None:
    sample = "\n".join(
        [
            "```sh",
            "curl -s localhost:8000/a \\",
            '     -d \'{"x": 1,',
            '          "y": "# not a comment"}\'   # → 409',
            "# a comment line",
            "X=$(curl -s localhost:8000/b)  # -> 404 (gone)",
            "```",
            "<!-- readme-test: skip: needs a second server -->",
            "```bash",
            "make run",
            "```",
            "```json",
            "{}",
            "```",
        ]
    )
    first, second = readme_blocks(sample)
    assert [(c.first, c.last, c.expect) for c in first.commands] == [(2, 4, 409), (6, 6, 404)]
    assert first.skip is None
    assert second.skip == "needs a second server"
    script, origin = script_of([first, second])
    assert "make run" not in script
    assert origin[len(PRELUDE.splitlines()) + 2] == 2


def test_every_shell_block_of_the_readme_runs_in_order(fresh_database: Callable[[], str], tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text())
    assert sum(block.skip is None for block in blocks) >= 5
    script, origin = script_of(blocks)
    (tmp_path / "readme.sh").write_text(script)
    calls = tmp_path / "calls"
    calls.mkdir()
    url = fresh_database()
    process, base = start_service(url)
    try:
        environ = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        run = subprocess.run(
            ["bash", str(tmp_path / "readme.sh")],
            cwd=PROJECT_ROOT,
            env={
                **environ,
                "FREYA_DATABASE_URL": url,
                "FREYA_DATA_DIR": str(tmp_path / "data"),
                "README_SERVICE": base.removeprefix("http://"),
                "README_CALLS": str(calls),
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert run.returncode == 0, f"a README command failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"

    commands = [command for block in blocks if block.skip is None for command in block.commands]
    answered: set[int] = set()
    wrong = []
    requests = 0
    for entry in (calls / "calls").read_text().splitlines():
        script_line, headers = entry.split(" ", 1)
        readme_line = origin[int(script_line)]
        command = next(c for c in commands if c.first <= readme_line <= c.last)
        status = answered_status(Path(headers))
        requests += 1
        answered.add(command.first)
        if command.expect is None and not (status is not None and 200 <= status < 300):
            wrong.append(f"README.md:{command.first}: answered {status}; the README shows no expected status")
        elif command.expect is not None and status != command.expect:
            wrong.append(f"README.md:{command.first}: answered {status}; the README says {command.expect}")
    assert not wrong, "\n".join(wrong) + f"\n\n{run.stdout[-4000:]}"
    unanswered = [c.first for c in commands if c.expect is not None and c.first not in answered]
    assert not unanswered, f"README lines with an expected status that made no request: {unanswered}"
    assert requests >= 20
