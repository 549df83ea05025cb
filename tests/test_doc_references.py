"""The words name only files that exist: every ``.py`` or ``.md`` path cited by the README, the
docs or a docstring in ``src/`` is in the repository, and every module the architecture's table
names is a file of the package."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"(?<![\w/.:-])((?:\.\.?/)*[\w-]+(?:/[\w.-]+)*\.(?:py|md))\b")
"""``docs/API.md``, ``src/tunesmith/files.py``, ``store/blobs.py``, ``../README.md``, ``loop.py``;
not URLs (``https://…/x.md``: the ``:`` or ``/`` before them)."""


def tracked() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [p for p in listed.stdout.split() if (ROOT / p).exists()]


FILES = tracked()
FOLDERS = {str(parent) for p in FILES for parent in Path(p).parents if str(parent) != "."}
DOCUMENTS = sorted(
    p
    for p in FILES
    if p == "README.md"
    or (p.startswith("docs/") and p.endswith(".md"))
    or (p.startswith("src/") and p.endswith(".py"))
)


def exists(reference: str, cited_in: str) -> bool:
    """A path as the reader would resolve it: from the repository root, from the citing file's
    folder, from the package (``store/blobs.py``), or as the tail of a repository path (a
    module table row names ``routes/files.py`` under ``api/``)."""
    if "/" not in reference:
        return any(Path(p).name == reference for p in FILES)
    bases = [".", str(Path(cited_in).parent), "src/tunesmith", "src"]
    for base in bases:
        candidate = os.path.normpath(os.path.join(base, reference))
        if candidate in FILES or candidate in FOLDERS:
            return True
    return any(p.endswith("/" + reference.lstrip("./")) for p in FILES)


def missing(document: str) -> list[str]:
    text = (ROOT / document).read_text()
    bare_ok = document.startswith("src/") or document == "docs/ARCHITECTURE.md"
    found = []
    for match in PATH.finditer(text):
        reference = match.group(1)
        if "/" not in reference and not bare_ok:
            continue  # prose elsewhere may name a file a tool writes (``sft.py``)
        if not exists(reference, document):
            found.append(reference)
    return found


@pytest.mark.parametrize("document", DOCUMENTS)
def test_cited_files_exist(document: str) -> None:
    assert missing(document) == []


def test_the_checker_sees_a_missing_file(tmp_path: Path) -> None:
    """The check itself: a cited path that is not there is reported, one that is is not."""
    assert not exists("reference/openai-contract.md", "src/tunesmith/training/auto.py")
    assert not exists("nowhere.py", "src/tunesmith/files.py")
    assert exists("store/blobs.py", "docs/ARCHITECTURE.md")
    assert exists("docs/API.md", "README.md")
    assert exists("../README.md", "docs/CLI.md")
    assert [m.group(1) for m in PATH.finditer("see https://x.org/a/b.md and `jobs/worker.py`")] == [
        "jobs/worker.py"
    ]


def test_every_module_of_the_architecture_table_exists() -> None:
    """Each row of the module table names a module or a package and the files in it."""
    text = (ROOT / "docs/ARCHITECTURE.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 20
    package = ROOT / "src" / "tunesmith"
    for row in rows:
        first, _, rest = row[2:].partition("|")
        name = first.strip().strip("`")
        assert (package / name).exists(), f"the table names {name}, which is not in the package"
        if name.endswith("/"):  # its modules, perhaps in a subpackage (api/routes/portal.py)
            for module in re.findall(r"`([\w/.]+\.py)`", rest):
                if "/" in module:  # from the package root or from the row's package
                    found = [p for p in (package / module, package / name / module) if p.exists()]
                else:
                    found = list((package / name).rglob(module))
                assert found, f"{name}{module} is not in the package"
