"""scripts/check_citations.py: every citation of a document resolves inside the repository."""

# check-citations: skip-file  (the cases below cite what does not exist, on purpose)

from __future__ import annotations

import runpy
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.helpers import ROOT

check: Any = runpy.run_path(str(ROOT / "scripts" / "check_citations.py"))


def make_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


PAGE = """
    # Protocol

    <a id="tail"></a>
    ## Tail (server-sent events)

    See [the hazards](hazards.md#recursion) and [the top](#protocol).
"""
HAZARDS = """
    <a id="recursion"></a>
    ## 5. Recursion

    **Tests:** `test_x.py::test_real`.
"""


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[[dict[str, str]], tuple[int, str]]:
    def run(extra: dict[str, str]) -> tuple[int, str]:
        tree = make_tree(
            tmp_path,
            {
                "docs/protocol.md": PAGE,
                "docs/hazards.md": HAZARDS,
                "tests/test_x.py": "def test_real():\n    pass\n",
                **extra,
            },
        )
        status = check["main"](["check_citations", str(tree)])
        return status, capsys.readouterr().out

    return run


def test_citations_that_resolve_pass(run: Callable[[dict[str, str]], tuple[int, str]]) -> None:
    status, out = run(
        {
            "lelog/a.py": '"""The tail (docs/protocol.md#tail, and docs/hazards.md#recursion).\n\n'
            'Also docs/protocol.md#tail-server-sent-events, #tail and a heading anchor."""\n',
            "README.md": "[tail](docs/protocol.md#tail) and docs/hazards.md\n",
        }
    )
    assert (status, out) == (0, "")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# see docs/protocol.md#nowhere\n", "no anchor #nowhere"),
        ("# see docs/protocol.md#tail, #nowhere\n", "no anchor #nowhere"),
        ("# see docs/missing.md\n", "no such file"),
        ("# see protocol.md §5\n", "cites a design note that is not in the repository"),
        ("# see pitfalls.md 5\n", "cites a design note that is not in the repository"),
        ("# see ../shared/design/architecture.md\n", "cites a design note that is not in the repository"),
        ("# see README.md#nothing\n", "no such file"),
    ],
)
def test_a_citation_that_does_not_resolve_fails_and_is_named(
    run: Callable[[dict[str, str]], tuple[int, str]], text: str, problem: str
) -> None:
    status, out = run({"lelog/a.py": text})
    assert status == 1
    (line,) = out.splitlines()
    assert line.startswith("lelog/a.py:1: ") and problem in line


def test_links_in_docs_and_the_tests_they_name_are_checked(
    run: Callable[[dict[str, str]], tuple[int, str]],
) -> None:
    status, out = run(
        {
            "docs/extra.md": "[x](protocol.md#gone) [y](writer.md) `test_x.py::test_gone` `test_x.py::test_real`\n"
            "`sub/test_y.py::test_real` `sub/test_y.py::test_gone`\n",
            "tests/sub/test_y.py": "def test_real():\n    pass\n",
        }
    )
    assert status == 1
    assert out.splitlines() == [
        "docs/extra.md:1: link 'protocol.md#gone': no anchor #gone",
        "docs/extra.md:1: link 'writer.md': no such file",
        "docs/extra.md:1: no test tests/test_x.py::test_gone",
        "docs/extra.md:2: no test tests/sub/test_y.py::test_gone",
    ]
