"""The README's and the docs' snippets are the tested ones: every ```python block of README.md, docs/*.md and
bench/README.md runs as written, and every `tidebase` command they name exists.

Each python block is a program run in a subprocess of its own (`sys.executable`, cwd a temporary folder) against a
fresh database: TIDEBASE_DATABASE_URL names a new clone of the migrated test template (the `dsn` fixture). That is
what "the embedded default" is replaced by: fix_db uses the server named by TIDEBASE_TEST_DATABASE_URL (CI), and
the embedded PostgreSQL when that variable is unset, so locally the snippets run against the embedded default itself.

The line before a block's fence may carry a marker:

- `<!-- snippet: continues -->`: the block continues the previous python block of its document; the concatenation
  runs.
- `<!-- snippet: upstream SDK -->`: the block uses the upstream SDK (PyPI `tidebase==0.7.0`); it runs with only the SDK
  importable as `tidebase` (PYTHONPATH = the SDK folder, as `server_proc.spawn_sdk` runs it) and TIDEBASE_URL naming a
  real `tidebase serve` over a fresh database.
- `<!-- snippet: not run: <reason> -->`: the block is not run, for the reason given.

Shell blocks (```sh, ```bash, and plain ``` blocks) and inline code spans that start with `tidebase ` are checked
differently: each `tidebase <command> [<subcommand>]` they name must answer `python -m tidebase <command>
[<subcommand>] --help` with exit 0 and list the `--options` written after it, so a renamed command or option breaks
this test.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from server_proc import Server

ROOT = Path(__file__).resolve().parents[2]
SNIPPET_TIMEOUT = 60.0

FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<text>.*?)\s*-->\s*$")
MARKER_LIKE = re.compile(r"<!--\s*snippet\b")
SHELL_LANGUAGES = ("sh", "bash", "shell", "console", "")
OTHER_LANGUAGES = ("text", "json", "sql", "toml", "yaml")
# a `tidebase` command at the start of a shell line or after `&&` / `;`, optionally after VAR=value assignments
SHELL_COMMAND = re.compile(r"(?:^|&&|;)\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*tidebase\s+(?P<rest>[^;&]*)")
INLINE_COMMAND = re.compile(r"`tidebase\s+(?P<rest>[^`]+)`")
WORD = re.compile(r"^[a-z][a-z-]*(?:\|[a-z][a-z-]*)*$")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def doc_files() -> list[Path]:
    """The documents whose snippets are tested: README.md, docs/*.md and bench/README.md."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
    return [f for f in files if f.exists()]


@dataclass(frozen=True)
class Block:
    """A fenced code block: its document, the line of its opening fence, its language, code and marker."""

    path: Path
    line: int
    lang: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def kind(self) -> str:
        """`run`, `continues`, `sdk` or `not run` (or `unknown` for a marker this test does not know)."""
        if self.marker is None:
            return "run"
        if self.marker == "continues":
            return "continues"
        if self.marker == "upstream SDK":
            return "sdk"
        if self.marker == "not run" or self.marker.startswith("not run:"):
            return "not run"
        return "unknown"


@dataclass
class Parsed:
    """Every block of every document, the inline code spans outside blocks, and what could not be parsed."""

    blocks: list[Block] = field(default_factory=list)
    inline: list[tuple[str, str]] = field(default_factory=list)  # (where, text of the line)
    problems: list[str] = field(default_factory=list)


def parse(path: Path, parsed: Parsed) -> None:
    """Adds the fenced blocks of `path` (with the marker on the line before each fence) to `parsed`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(ROOT).as_posix()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            if MARKER_LIKE.search(lines[i]) and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                parsed.problems.append(f"{rel}:{i + 1}: a snippet marker must be on the line just before a fence")
            parsed.inline.append((f"{rel}:{i + 1}", lines[i]))
            i += 1
            continue
        fence = opening.group("fence")
        start = i
        i += 1
        while i < len(lines) and not re.match(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            i += 1
        if i == len(lines):
            parsed.problems.append(f"{rel}:{start + 1}: the fence is never closed")
            return
        previous = lines[start - 1] if start > 0 else ""
        marker_match = MARKER.match(previous)
        if marker_match is None and MARKER_LIKE.search(previous):
            parsed.problems.append(f"{rel}:{start}: malformed snippet marker {previous.strip()!r}")
        block = Block(path, start + 1, opening.group("info").lower(), "\n".join(lines[start + 1:i]) + "\n",
                      marker_match.group("text") if marker_match else None)
        parsed.blocks.append(block)
        i += 1


def check(parsed: Parsed) -> None:
    """Records what makes a block unusable: an unknown language or marker, a marker on a block that is not python,
    a `continues` block with no runnable python block before it."""
    last_python: dict[Path, Block] = {}
    for block in parsed.blocks:
        if block.lang.startswith("py") and block.lang != "python":
            parsed.problems.append(f"{block.where}: write ```python, not ```{block.lang}, so that the block runs")
        elif block.lang not in ("python", *SHELL_LANGUAGES, *OTHER_LANGUAGES):
            parsed.problems.append(f"{block.where}: unknown block language {block.lang!r}")
        if block.lang != "python":
            if block.marker is not None:
                parsed.problems.append(f"{block.where}: snippet marker on a ```{block.lang} block")
            continue
        if block.kind == "unknown":
            parsed.problems.append(f"{block.where}: unknown snippet marker {block.marker!r}")
        if block.kind == "continues":
            before = last_python.get(block.path)
            if before is None or before.kind not in ("run", "continues"):
                parsed.problems.append(f"{block.where}: `continues` needs a python block run by this test before it")
        last_python[block.path] = block


def parse_all() -> Parsed:
    parsed = Parsed()
    for path in doc_files():
        parse(path, parsed)
    check(parsed)
    return parsed


PARSED = parse_all()
PYTHON = [b for b in PARSED.blocks if b.lang == "python"]


def chain(block: Block) -> list[Block]:
    """The blocks whose concatenation is the program of `block`: its predecessors when it continues them."""
    if block.kind != "continues":
        return [block]
    before = [b for b in PYTHON if b.path == block.path and b.line < block.line]
    if not before or before[-1].kind not in ("run", "continues"):
        return [block]  # reported by test_every_python_block_is_parsed_and_marked
    return [*chain(before[-1]), block]


def program(block: Block) -> str:
    return "".join(f"# --- {b.where}\n{b.code}" for b in chain(block))


def params(*kinds: str) -> list[object]:
    return [pytest.param(b, id=b.where) for b in PYTHON if b.kind in kinds]


def run_program(block: Block, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs the program of `block` as a script in `cwd`; fails the test, showing its output, unless it exits 0 and
    prints something (every snippet shows its reader a result)."""
    script = cwd / "snippet.py"
    script.write_text(program(block), encoding="utf-8")
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=SNIPPET_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.where} did not finish in {SNIPPET_TIMEOUT:.0f} s\nstdout:\n{exc.stdout!r}\n"
                    f"stderr:\n{exc.stderr!r}")
    assert done.returncode == 0, (f"{block.where} exited {done.returncode}\n--- program\n{program(block)}"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}")
    assert done.stdout.strip(), f"{block.where} printed nothing; a snippet shows its reader a result"
    return done


def clean_env() -> dict[str, str]:
    """The environment of this process without Tidebase's own variables (and DATABASE_URL)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_") and k != "DATABASE_URL"}


# -- the structure of the documents ------------------------------------------------------------------------------------


def test_every_python_block_is_parsed_and_marked() -> None:
    """Every ```python fence of the documents is parsed into a block with a known marker, and nothing is malformed."""
    assert PYTHON, "no python block found: the parser is broken"
    for path in doc_files():
        fences = sum(1 for line in path.read_text(encoding="utf-8").splitlines()
                     if re.match(r"^ {0,3}(`{3,}|~{3,})\s*python\b", line))
        parsed = sum(1 for b in PYTHON if b.path == path)
        assert parsed == fences, f"{path.name}: {fences} ```python fences but {parsed} blocks parsed"
    assert not PARSED.problems, "\n".join(PARSED.problems)


def test_not_run_markers_carry_a_reason() -> None:
    """Every `not run` marker says why its block cannot run here."""
    bare = [b.where for b in PYTHON if b.kind == "not run" and not (b.marker or "").partition(":")[2].strip()]
    assert not bare, f"`<!-- snippet: not run: <reason> -->` needs a reason: {bare}"


# -- python snippets ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", params("run", "continues"))
def test_snippet_runs(block: Block, dsn: str, tmp_path: Path) -> None:
    """The snippet (with the blocks it continues) runs as written against a fresh database and exits 0."""
    run_program(block, {**clean_env(), "TIDEBASE_DATABASE_URL": dsn}, tmp_path)


@pytest.fixture(scope="module")
def sdk_env(sdk_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment SDK snippets run in: PYTHONPATH holds only the SDK, which must be what `import tidebase`
    finds there (else a snippet could pass with this project's library in its place)."""
    env = {**clean_env(), "PYTHONPATH": str(sdk_path)}
    which = subprocess.run([sys.executable, "-c", "import tidebase; print(tidebase.__file__)"], env=env,
                           cwd=tmp_path_factory.mktemp("which"), capture_output=True, text=True, timeout=30,
                           check=True)
    assert Path(which.stdout.strip()).resolve().is_relative_to(sdk_path.resolve()), which.stdout
    return env


@pytest.mark.parametrize("block", params("sdk"))
def test_sdk_snippet_runs(block: Block, sdk_env: dict[str, str], server: Server, tmp_path: Path) -> None:
    """The upstream-SDK snippet runs as written against a real `tidebase serve`, and its runs are in its database."""
    run_program(block, {**sdk_env, "TIDEBASE_URL": server.url}, tmp_path)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM tidebase.runs WHERE status = 'completed'").fetchone()
    assert row is not None
    assert row[0] >= 1, "the snippet completed no run on the server"


# -- shell commands ----------------------------------------------------------------------------------------------------


def command_words(rest: str) -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The commands named by the text after `tidebase` (`runs ls|show [--json]` names two), each with the options
    written after it."""
    tokens = rest.split()
    if not tokens or not WORD.match(tokens[0]):
        return
    words = [tokens[0].split("|")]
    if len(tokens) > 1 and WORD.match(tokens[1]):
        words.append(tokens[1].split("|"))
    options = tuple(dict.fromkeys(OPTION.findall(rest)))
    for combination in itertools.product(*words):
        yield combination, options


def documented_commands() -> dict[tuple[str, ...], dict[str, set[str]]]:
    """Every `tidebase` command the documents name: {words: {option: places}} ({"": places} for the command)."""
    found: dict[tuple[str, ...], dict[str, set[str]]] = {}

    def add(rest: str, where: str) -> None:
        for words, options in command_words(rest):
            entry = found.setdefault(words, {})
            for option in ("", *options):
                entry.setdefault(option, set()).add(where)

    for block in PARSED.blocks:
        if block.lang not in SHELL_LANGUAGES:
            continue
        for offset, line in enumerate(block.code.splitlines(), start=1):
            # a comment (`# ...`), or in a plain block a description after two or more spaces, is not the command
            text = re.split(r"\s#|\s{2,}(?=\S)" if block.lang == "" else r"\s#", line.strip(), maxsplit=1)[0]
            for match in SHELL_COMMAND.finditer(text):
                add(match.group("rest"), f"{block.path.relative_to(ROOT).as_posix()}:{block.line + offset}")
    for where, line in PARSED.inline:
        for match in INLINE_COMMAND.finditer(line):
            add(match.group("rest"), where)
    return found


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def help_texts(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """`python -m tidebase <words> --help` of every documented command, run a few at a time."""
    cwd = tmp_path_factory.mktemp("cli-help")

    def run(words: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tidebase", *words, "--help"], cwd=cwd, env=clean_env(),
                              capture_output=True, text=True, timeout=60, check=False)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(COMMANDS, pool.map(run, COMMANDS), strict=True))


def test_docs_name_tidebase_commands() -> None:
    """The documents' shell blocks name `tidebase` commands (else the parser missed them)."""
    assert ("serve",) in COMMANDS
    assert ("runs", "ls") in COMMANDS


@pytest.mark.parametrize("words", [pytest.param(w, id="tidebase " + " ".join(w)) for w in sorted(COMMANDS)])
def test_documented_command_exists(
    words: tuple[str, ...], help_texts: dict[tuple[str, ...], subprocess.CompletedProcess[str]]
) -> None:
    """The documented command answers `--help` with exit 0 and lists every option the documents give it."""
    places = COMMANDS[words]
    done = help_texts[words]
    command = "tidebase " + " ".join(words)
    assert done.returncode == 0, (f"`{command}` (named at {sorted(places[''])}) is not a command: "
                                  f"{done.stderr[-2000:]}")
    listed = set(OPTION.findall(done.stdout))
    missing = {option: sorted(where) for option, where in places.items() if option and option not in listed}
    assert not missing, f"`{command} --help` does not list these documented options: {missing}"
