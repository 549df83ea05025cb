"""Which examples are held out for validation (:mod:`tunesmith.data.split`): how many, which, and
that the CLI's split files hold exactly those lines, whatever the file's byte order mark, line
endings and trailing blank lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import chat_example, jsonl
from tunesmith.cli.data import split_file
from tunesmith.data.split import split_indices, split_lines


@pytest.mark.parametrize(
    ("n", "fraction", "held"),
    [(20, 0.2, 4), (17, 0.25, 5), (100, 0.07, 7), (3, 0.01, 1), (10, 0.5, 5), (1, 0.5, 1)],
)
def test_the_share_is_rounded_up_and_at_least_one(n: int, fraction: float, held: int) -> None:
    kept, validation = split_indices(n, fraction, seed=0)
    assert len(validation) == held
    assert sorted(kept + validation) == list(range(n))
    assert kept == sorted(kept) and validation == sorted(validation)


def test_the_seed_decides_and_nothing_else() -> None:
    assert split_indices(50, 0.2, seed=7) == split_indices(50, 0.2, seed=7)
    assert len({tuple(split_indices(50, 0.2, seed=s)[1]) for s in range(10)}) == 10


def test_split_files_hold_the_lines_split_lines_names(tmp_path: Path) -> None:
    rows = jsonl([chat_example(i) for i in range(13)]).splitlines()
    # a byte order mark, CRLF on some lines, trailing blank lines
    lines = [row + (b"\r\n" if i % 3 == 0 else b"\n") for i, row in enumerate(rows)]
    lines[-1] = rows[-1] + b"\n\n\r\n"
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(lines))
    kept, held = split_lines(path, 0.3, seed=5)
    assert len(held) == 4 and sorted(kept + held) == list(range(1, 14))
    (train, n_train), (valid, n_valid) = split_file(path, tmp_path / "out", 0.3, 5)
    assert (n_train, n_valid) == (9, 4)
    expected = [*lines[:-1], rows[-1] + b"\n"]  # each line as it was, the blank ones left out
    assert valid.read_bytes() == b"".join(expected[n - 1] for n in held)
    assert train.read_bytes() == b"".join(expected[n - 1] for n in kept)
    # a last line without its newline gets one
    path.write_bytes(b"".join(lines[:-1]) + rows[-1])
    split_file(path, tmp_path / "again", 0.3, 5)
    copied = (tmp_path / "again" / "train.jsonl").read_bytes() + (
        tmp_path / "again" / "valid.jsonl"
    ).read_bytes()
    assert copied.count(rows[-1] + b"\n") == 1
