"""Check that every citation of a document in the repository can be followed from a clone.

    python scripts/check_citations.py [ROOT]

Exit status 1, with one ``path:line: problem`` per finding, when:

* a ``docs/...`` citation (``docs/protocol.md#tail``, or a group ``docs/hazards.md#fork,
  #recursion``) names a file that does not exist, or an anchor that the page does not define;
* any other ``<file>.md#<anchor>`` citation, or a relative Markdown link ``[text](target)``,
  does not resolve (links resolve from the file that holds them, citations from the root);
* a design note is cited by its bare name, without ``docs/``: the team's notes those names
  came from are not in the repository (``docs/`` holds the pages to cite);
* a ``tests/...`` test named in a ``docs/`` page (```test_x.py::test_name```, or
  ```folder/test_x.py::test_name``` below ``tests/``) does not exist.

An anchor is an ``<a id="...">`` or a heading's slug as GitHub makes it.  Only tracked and
untracked-but-not-ignored files are read (everything when ``ROOT`` is not a git checkout).
A file that spells out bad citations on purpose (this one, and its tests) says so with the
line ``# check-citations: skip-file``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

#: Files read: these suffixes, and the CI script.
SUFFIXES = {".py", ".md", ".toml", ".cfg", ".ini", ".txt", ".yml", ".yaml", ".sh"}
EXTRA = {".ci/run"}

#: The names of the design notes that lived outside the repository.  Cited without ``docs/``
#: they point at nothing a reader of a clone has.
_NOTES = "|".join(("protocol", "pitfalls", "architecture"))
BARE_NOTE = re.compile(r"(?<![\w/.\-\[])(?<!\]\()(?:\.\./)*(?:shared/design/)?(?:" + _NOTES + r")\.md")
SHARED_DIR = re.compile(r"shared/design")
#: ``docs/page.md#a, #b and #c``: one page, one or more anchors.
DOCS_CITATION = re.compile(
    r"(?<![\w/.\-])(docs/[\w./\-]*[\w\-])((?:#[\w\-]+)(?:(?:,\s*|\s+and\s+)#[\w\-]+)*)?"
)
#: ``README.md#configuration`` and the like, outside ``docs/`` and outside Markdown links.
MD_ANCHOR = re.compile(r"(?<![\w/.\-\(])([\w./\-]+\.md)#([\w\-]+)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
ANCHOR_ID = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
TEST_REF = re.compile(r"`((?:\w+/)*test_\w+\.py)::(test_\w+)`")
SKIP_FILE = "# check-citations: skip-file"


def files(root: Path) -> List[Path]:
    """The files to read under ``root``: what git tracks or would track, else everything."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = [name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    chosen = [root / n for n in names if Path(n).suffix in SUFFIXES or n in EXTRA]
    return sorted(p for p in chosen if p.is_file())


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"[`*_\[\]()]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


class Anchors:
    """The anchors each Markdown page defines, read once."""

    def __init__(self) -> None:
        self._cache: Dict[Path, Set[str]] = {}

    def of(self, page: Path) -> Set[str]:
        if page not in self._cache:
            text = page.read_text(encoding="utf-8")
            found = set(ANCHOR_ID.findall(text))
            found.update(slug(h) for h in HEADING.findall(_without_code(text)))
            self._cache[page] = found
        return self._cache[page]


def _without_code(text: str) -> str:
    """Markdown without its fenced code blocks (a ``#`` comment there is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _resolve(target: Path, anchors: List[str], known: Anchors) -> Optional[str]:
    """What is wrong with a citation of ``target`` at ``anchors``, or None."""
    if not target.exists():
        return "no such file"
    if anchors and target.suffix != ".md":
        return "an anchor in a file that is not a Markdown page"
    missing = [a for a in anchors if a not in known.of(target)]
    if missing:
        return "no anchor " + ", ".join("#" + a for a in missing)
    return None


def check_file(root: Path, path: Path, known: Anchors) -> Iterator[str]:
    rel = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    if SKIP_FILE in text:
        return
    where = lambda offset: f"{rel}:{_line_of(text, offset)}"  # noqa: E731
    is_markdown = path.suffix == ".md"

    # Markdown links resolve from the page that holds them.
    link_spans = []
    if is_markdown:
        for match in MD_LINK.finditer(text):
            link_spans.append(match.span(1))
            target = match.group(1)
            if re.match(r"[a-z][a-z0-9+.\-]*:", target):  # http:, https:, mailto:
                continue
            page, _, anchor = target.partition("#")
            resolved = (path.parent / page) if page else path
            problem = _resolve(resolved, [anchor] if anchor else [], known)
            if problem:
                yield f"{where(match.start(1))}: link {target!r}: {problem}"

    def in_link(offset: int) -> bool:
        return any(start <= offset < end for start, end in link_spans)

    for match in DOCS_CITATION.finditer(text):
        if in_link(match.start()):
            continue
        anchors = re.findall(r"#([\w\-]+)", match.group(2) or "")
        problem = _resolve(root / match.group(1), anchors, known)
        if problem:
            yield f"{where(match.start())}: {match.group(0)!r}: {problem}"

    for match in MD_ANCHOR.finditer(text):
        if in_link(match.start()) or match.group(1).startswith("docs/"):
            continue
        problem = _resolve(root / match.group(1), [match.group(2)], known)
        if problem:
            yield f"{where(match.start())}: {match.group(0)!r}: {problem}"

    reported: List[range] = []  # a bare note's span: its shared/design part is not news
    for pattern in (BARE_NOTE, SHARED_DIR):
        for match in pattern.finditer(text):
            if in_link(match.start()) or any(match.start() in span for span in reported):
                continue
            reported.append(range(match.start(), match.end()))
            yield (
                f"{where(match.start())}: {match.group(0)!r} cites a design note that is not in "
                "the repository: cite its page under docs/ (e.g. docs/protocol.md#endpoints)"
            )

    if rel.startswith("docs/"):
        for match in TEST_REF.finditer(text):
            test_file = root / "tests" / match.group(1)
            if not test_file.exists() or not re.search(
                rf"^(?:async )?def {match.group(2)}\b", test_file.read_text(encoding="utf-8"), re.MULTILINE
            ):
                yield f"{where(match.start())}: no test tests/{match.group(1)}::{match.group(2)}"


def main(argv: List[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    known = Anchors()
    problems = [problem for path in files(root) for problem in check_file(root, path, known)]
    for problem in problems:
        print(problem)
    if problems:
        print(
            f"check_citations: {len(problems)} citation(s) do not resolve in the repository", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
