"""The validation corpus: one small bad file per rule of the checklist, and what each must report.

``tests/data/bad/expected.json`` is the single table of expectations: for every file, either the
structural error it raises (``raises``: code and 1-based line) or the exact errors and warnings
of its report (code, line, message index, field), in the order the validator finds them. Files
have 12 examples unless the count itself is the point, so that exactly the intended problem
is reported. The statistics test recounts tokens with the tokenizer itself, not with the
validator's spans.
"""

from __future__ import annotations

import json
import re
import statistics
from array import array
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.toy_model import CHATML_TEMPLATE, build_toy_model_dir
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.issues import Issue
from tunesmith.data.jsonl import JsonlFormatError
from tunesmith.data.stats import histogram
from tunesmith.data.validate import validate_file
from tunesmith.training.auto import auto_n_epochs

CORPUS = Path(__file__).parent / "data" / "bad"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())
STRUCTURAL = sorted(name for name, entry in EXPECTED.items() if "raises" in entry)
REPORTED = sorted(name for name, entry in EXPECTED.items() if "errors" in entry)

# Every code the validator emits today: jsonl.py, messages.py, rules.py and validate.py.
ERROR_CODES = {
    # jsonl.py: the file is not JSONL at all
    "invalid_utf8",
    "invalid_json",
    "not_a_dictionary",
    "blank_line",
    "empty_file",
    # messages.py and rules.py: one example
    "missing_messages_list",
    "message_not_object",
    "message_missing_key",
    "missing_content",
    "invalid_content_type",
    "invalid_content_part",
    "message_unrecognized_key",
    "unrecognized_role",
    "example_missing_assistant_message",
    "no_trainable_messages",
    "invalid_weight",
    "invalid_name",
    "invalid_tool_calls",
    "invalid_function_call",
    "invalid_refusal",
    "invalid_tools",
    "invalid_parallel_tool_calls",
    "invalid_functions",
    "example_unrecognized_key",
    "reserved_token",
    "missing_input",
    "invalid_input_messages",
    "invalid_preferred_output",
    "invalid_non_preferred_output",
    "missing_prompt",
    "invalid_prompt",
    "missing_completion",
    "invalid_completion",
    # validate.py: the whole file, or the tokenizer
    "mixed_formats",
    "invalid_n_examples",
    "template_render_failed",
}
WARNING_CODES = {
    "missing_system_message",
    "missing_user_message",
    "empty_assistant_message",
    "duplicate_example",
    "example_too_long",
}
# A message says what to do when it tells a fix or states the rule to follow.
_SAYS_WHAT_TO_DO = re.compile(
    r"\b(add|remove|use|set|must|needs?|give|write|save|shorten|split|escape|fix|only)\b", re.I
)


# Like many real templates, the corpus model's refuses a role it does not know.
STRICT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'function' %}"
    "{{ raise_exception('function messages are not supported') }}{% endif %}{% endfor %}"
    + CHATML_TEMPLATE
)


@pytest.fixture(scope="module")
def chat_format(tmp_path_factory: pytest.TempPathFactory) -> ChatFormat:
    folder = tmp_path_factory.mktemp("strict-toy")
    return ChatFormat.from_dir(
        build_toy_model_dir(folder, chat_template=STRICT_TEMPLATE, with_weights=False)
    )


def _where(issue: Issue) -> dict[str, Any]:
    return {
        "code": issue.code,
        "line": issue.line,
        "message_index": issue.message_index,
        "field": issue.field,
    }


def _order(where: dict[str, Any]) -> tuple[int, str, int, str]:
    return (where["line"] or 0, where["code"], where["message_index"] or -1, where["field"] or "")


def _assert_actionable(issue: Issue) -> None:
    assert issue.message.strip(), issue
    if issue.code != "invalid_n_examples":  # a property of the whole file
        assert issue.line is not None, issue
    if issue.message_index is not None:
        assert issue.field is not None and f"[{issue.message_index}]" in issue.field, issue
    assert _SAYS_WHAT_TO_DO.search(issue.message), f"says not what to do: {issue.message}"


# -- the table itself --------------------------------------------------------------------------


def test_every_file_has_one_row_and_every_row_a_file() -> None:
    files = {p.name for p in CORPUS.glob("*.jsonl")}
    assert files == set(EXPECTED)
    assert len(files) >= 35
    for name, entry in EXPECTED.items():
        assert entry["about"], name
        assert ("raises" in entry) != ("errors" in entry), name


def test_the_corpus_covers_every_code() -> None:
    raised = {EXPECTED[name]["raises"]["code"] for name in STRUCTURAL}
    reported = {e["code"] for name in REPORTED for e in EXPECTED[name]["errors"]}
    warned = {w["code"] for name in REPORTED for w in EXPECTED[name].get("warnings", [])}
    assert raised | reported == ERROR_CODES
    assert warned == WARNING_CODES


def test_files_meant_to_break_one_rule_have_enough_examples() -> None:
    """Ten or more lines, so that a missing count never hides behind the intended problem."""
    for name in REPORTED:
        lines = [line for line in (CORPUS / name).read_bytes().splitlines() if line.strip()]
        expects_count_error = any(
            e["code"] == "invalid_n_examples" for e in EXPECTED[name]["errors"]
        )
        assert (len(lines) < 10) == expects_count_error, name


# -- structural errors: the file is not JSONL ----------------------------------------------------


@pytest.mark.parametrize("name", STRUCTURAL)
def test_structural_error(name: str, chat_format: ChatFormat) -> None:
    expected = EXPECTED[name]["raises"]
    with pytest.raises(JsonlFormatError) as info:
        validate_file(CORPUS / name, chat_format)
    error = info.value
    assert {"code": error.code, "line": error.line} == expected
    assert error.message == str(error)
    assert _SAYS_WHAT_TO_DO.search(error.message), error.message
    assert "\r" not in error.message
    if error.code == "empty_file":
        return
    # It names the line, and no other line (the parser's own "line 1" of a one-line document
    # would contradict it).
    assert f"Line {error.line} " in error.message
    assert set(re.findall(r"\bline (\d+)", error.message, re.I)) == {str(error.line)}
    if error.code == "blank_line":
        return
    raw = (CORPUS / name).read_bytes().splitlines()[error.line - 1]
    start = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").strip()[:30]
    if start.isprintable():  # not the UTF-16 file, whose NUL bytes are shown escaped
        # Quoted as it is in the file, so the user can search for it.
        assert f'line starts with: "{start}' in error.message


def test_structural_errors_carry_the_same_message_without_a_tokenizer() -> None:
    for name in STRUCTURAL:
        with pytest.raises(JsonlFormatError) as info:
            validate_file(CORPUS / name, None)
        assert info.value.code == EXPECTED[name]["raises"]["code"]


# -- rule errors and warnings: the report --------------------------------------------------------


@pytest.mark.parametrize("name", REPORTED)
def test_report(name: str, chat_format: ChatFormat) -> None:
    entry = EXPECTED[name]
    cap = entry.get("max_issues", 100)
    report = validate_file(CORPUS / name, chat_format, max_issues=cap)

    # Errors in the order they are found; past the cap only counted.
    assert [_where(i) for i in report.errors.items] == entry["errors"][:cap]
    assert report.errors.total == entry.get("error_total", len(entry["errors"]))
    assert len(report.errors.items) <= cap
    expected_warnings = sorted(entry.get("warnings", []), key=_order)
    assert sorted((_where(i) for i in report.warnings.items), key=_order) == expected_warnings
    assert report.valid is (not entry["errors"])
    for issue in [*report.errors.items, *report.warnings.items]:
        _assert_actionable(issue)
    if not report.valid:
        assert report.summary().startswith(f"{report.errors.total} error(s); first: ")


def test_all_problems_are_reported_not_just_the_first(chat_format: ChatFormat) -> None:
    report = validate_file(CORPUS / "multi_error.jsonl", chat_format)
    assert report.errors.total == len(EXPECTED["multi_error.jsonl"]["errors"]) >= 7
    assert {i.line for i in report.errors.items} == {2, 5, 8, 11}
    # One line, three bad messages: each of them, one of them twice.
    assert [i.message_index for i in report.errors.items if i.line == 2] == [1, 2, 2, 3]


def test_the_cap_bounds_items_but_total_counts_all(chat_format: ChatFormat) -> None:
    name = "over_cap.jsonl"
    report = validate_file(CORPUS / name, chat_format, max_issues=3)
    assert len(report.errors.items) == 3
    assert report.errors.total == 9
    uncapped = validate_file(CORPUS / name, chat_format)
    assert uncapped.errors.items[:3] == report.errors.items
    assert len(uncapped.errors.items) == uncapped.errors.total == 9


def test_a_byte_order_mark_changes_nothing(chat_format: ChatFormat, tmp_path: Path) -> None:
    with_bom = (CORPUS / "bom_valid.jsonl").read_bytes()
    assert with_bom.startswith(b"\xef\xbb\xbf")
    without = tmp_path / "no_bom.jsonl"
    without.write_bytes(with_bom[3:])
    report = validate_file(CORPUS / "bom_valid.jsonl", chat_format)
    assert report.valid and report.n_examples == 12
    assert report.warnings.total == 0
    assert report.to_dict() == validate_file(without, chat_format).to_dict()


def test_crlf_line_numbers_match_an_lf_copy(chat_format: ChatFormat, tmp_path: Path) -> None:
    crlf = (CORPUS / "crlf_rule_error_line7.jsonl").read_bytes()
    assert crlf.count(b"\r\n") == crlf.count(b"\n") == 12
    lf = tmp_path / "lf.jsonl"
    lf.write_bytes(crlf.replace(b"\r\n", b"\n"))
    assert validate_file(lf, chat_format).to_dict() == (
        validate_file(CORPUS / "crlf_rule_error_line7.jsonl", chat_format).to_dict()
    )


def test_rule_errors_are_found_without_a_tokenizer() -> None:
    """Only the tokenizer's own checks need one; everything else is reported regardless."""
    needs_tokenizer = {"reserved_token", "template_render_failed"}
    for name in REPORTED:
        if name == "over_cap.jsonl":
            continue
        report = validate_file(CORPUS / name, None)
        expected = [e for e in EXPECTED[name]["errors"] if e["code"] not in needs_tokenizer]
        assert [_where(i) for i in report.errors.items] == expected, name
        assert report.statistics is None


# -- warnings ----------------------------------------------------------------------------------


def test_duplicate_names_the_original_line(chat_format: ChatFormat) -> None:
    report = validate_file(CORPUS / "warnings.jsonl", chat_format)
    (duplicate,) = [w for w in report.warnings.items if w.code == "duplicate_example"]
    assert duplicate.line == 9
    assert "line 3" in duplicate.message
    lines = (CORPUS / "warnings.jsonl").read_bytes().splitlines()
    assert lines[8] == lines[2]


def test_too_long_is_counted_by_the_tokenizer(chat_format: ChatFormat) -> None:
    report = validate_file(CORPUS / "warnings.jsonl", chat_format)
    (too_long,) = [w for w in report.warnings.items if w.code == "example_too_long"]
    example = json.loads((CORPUS / "warnings.jsonl").read_bytes().splitlines()[too_long.line - 1])
    tokens = _chat_tokens(chat_format, example["messages"])
    assert tokens > chat_format.context_length == 256
    assert f"{tokens} tokens" in too_long.message
    assert report.statistics is not None
    assert report.statistics["examples_over_context_length"] == 1
    assert report.statistics["tokens_per_example"]["max"] == tokens


# -- statistics against an independent count -----------------------------------------------------


def _chat_tokens(chat_format: ChatFormat, messages: list[dict[str, Any]]) -> int:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    ids = chat_format.tokenizer.apply_chat_template(plain, tokenize=True, return_dict=False)
    return len(ids)


def _assistant_tokens(chat_format: ChatFormat, messages: list[dict[str, Any]]) -> int:
    """Assistant tokens: each weighted assistant answer and its end-of-turn token, encoded alone."""
    tokenizer = chat_format.tokenizer
    return sum(
        len(tokenizer(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"])
        for m in messages
        if m["role"] == "assistant" and m.get("weight", 1) == 1
    )


def _distribution(values: list[int]) -> dict[str, float]:
    p5, *_, p95 = statistics.quantiles(values, n=20, method="inclusive")
    return {
        "min": min(values),
        "max": max(values),
        "mean": round(statistics.mean(values), 2),
        "median": float(statistics.median(values)),
        "p5": pytest.approx(p5),
        "p95": pytest.approx(p95),
    }


def _stats_examples() -> list[dict[str, Any]]:
    system = {"role": "system", "content": "You answer arithmetic briefly."}
    examples: list[dict[str, Any]] = []
    for i in range(12):
        messages = [system, {"role": "user", "content": f"What is {i} times {i}?"}]
        messages.append({"role": "assistant", "content": f"It is {i * i}."})
        if i % 3 == 0:  # a follow-up turn, whose first answer is context only
            messages[-1]["weight"] = 0
            messages.append({"role": "user", "content": "And doubled, please?"})
            messages.append({"role": "assistant", "content": f"Doubled, it is {2 * i * i}."})
        if i == 5:  # over the toy context of 256 tokens
            messages[1]["content"] += " " + " ".join(f"Word{k}" for k in range(60))
        if i == 7:  # no system message
            messages = messages[1:]
        examples.append({"messages": messages})
    return examples


def test_statistics_match_an_independent_count(chat_format: ChatFormat, tmp_path: Path) -> None:
    examples = _stats_examples()
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    report = validate_file(path, chat_format)
    assert report.valid and report.n_examples == 12

    n_messages = [len(e["messages"]) for e in examples]
    totals = [_chat_tokens(chat_format, e["messages"]) for e in examples]
    trained = [_assistant_tokens(chat_format, e["messages"]) for e in examples]
    context = chat_format.context_length
    billable = sum(min(context, t) for t in totals)
    assert sum(t > context for t in totals) == 1

    stats = report.statistics
    assert stats is not None
    assert stats["messages_per_example"] == _distribution(n_messages)
    assert stats["tokens_per_example"] == _distribution(totals)
    assert stats["assistant_tokens_per_example"] == _distribution(trained)
    assert stats["examples_over_context_length"] == 1
    assert stats["billable_tokens"] == billable
    # The cookbook rule: fewer than 100 examples seen in 3 epochs -> 100 // n epochs.
    assert stats["auto_n_epochs"] == 100 // 12 == 8 == auto_n_epochs(12)
    assert stats["estimated_trained_tokens"] == 8 * billable
    # Weight-0 answers are context only: counting them too would give other figures.
    with_weight_0 = [
        _assistant_tokens(chat_format, [{**m, "weight": 1} for m in e["messages"]])
        for e in examples
    ]
    assert with_weight_0 != trained
    assert stats["assistant_tokens_per_example"] != _distribution(with_weight_0)


def test_statistics_by_hand_for_message_counts(chat_format: ChatFormat, tmp_path: Path) -> None:
    """Messages per example worked out on paper: 7 examples of 3, 4 of 5 and 1 of 2."""
    report = validate_file(_write(tmp_path, _stats_examples()), chat_format)
    assert report.statistics is not None
    by_hand = report.statistics["messages_per_example"]
    # i % 3 == 0 -> 5 messages (i = 0, 3, 6, 9); i == 7 -> 2 (no system); the rest 3.
    counts = [5, 3, 3, 5, 3, 3, 5, 2, 3, 5, 3, 3]
    assert by_hand["min"] == 2 and by_hand["max"] == 5
    assert by_hand["mean"] == round(sum(counts) / 12, 2) == 3.58
    assert by_hand["median"] == 3.0


# -- histograms ----------------------------------------------------------------------------------


def test_histograms_by_hand_for_message_counts(chat_format: ChatFormat, tmp_path: Path) -> None:
    """The same message counts as above, one bar per count: 2 (once), 3 (7), 4 (none), 5 (4)."""
    report = validate_file(_write(tmp_path, _stats_examples()), chat_format)
    assert report.statistics is not None
    histograms = report.statistics["histograms"]
    assert set(histograms) == {
        "messages_per_example",
        "tokens_per_example",
        "assistant_tokens_per_example",
    }
    assert histograms["messages_per_example"] == {"edges": [2, 3, 4, 5, 6], "counts": [1, 7, 0, 4]}


def test_token_histograms_count_every_example_once(chat_format: ChatFormat, tmp_path: Path) -> None:
    examples = _stats_examples()
    report = validate_file(_write(tmp_path, examples), chat_format)
    assert report.statistics is not None
    histograms = report.statistics["histograms"]
    totals = [_chat_tokens(chat_format, e["messages"]) for e in examples]
    trained = [_assistant_tokens(chat_format, e["messages"]) for e in examples]
    for name, values in (("tokens_per_example", totals), ("assistant_tokens_per_example", trained)):
        edges, counts = histograms[name]["edges"], histograms[name]["counts"]
        assert len(edges) == len(counts) + 1 <= 21
        assert sum(counts) == 12
        assert edges[0] == min(values) and edges[-2] <= max(values) < edges[-1]
        assert len({b - a for a, b in pairwise(edges)}) == 1  # equal widths
        assert counts == np.histogram(values, bins=edges)[0].tolist()


@pytest.mark.parametrize(
    ("values", "edges", "counts"),
    [
        ([7], [7, 8], [1]),
        ([4, 4, 4], [4, 5], [3]),  # one distinct value: one bin
        ([0, 19], [*range(21)], [1, *[0] * 18, 1]),  # 20 integers: 20 bins of width 1
        ([0, 20], [*range(0, 23, 2)], [1, *[0] * 9, 1]),  # 21 integers: width 2, 11 bins
        (
            [10, 11, 12, 30, 49, 50],
            [10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46, 49, 52],
            [3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2],
        ),
        # 901 integers: width 46, 20 bins
        ([100, 1000, 550], [100 + 46 * i for i in range(21)], [1, *[0] * 8, 1, *[0] * 9, 1]),
    ],
)
def test_histogram_bins(values: list[int], edges: list[int], counts: list[int]) -> None:
    result = histogram(array("i", values))
    assert result == {"edges": edges, "counts": counts}
    assert sum(counts) == len(values)


@pytest.mark.parametrize("seed", range(5))
def test_histograms_of_random_counts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(1, rng.integers(2, 50_000), size=int(rng.integers(1, 5_000)))
    result = histogram(array("i", values.tolist()))
    assert result is not None
    edges, counts = result["edges"], result["counts"]
    assert len(edges) == len(counts) + 1 <= 21
    assert sum(counts) == len(values)
    assert edges[0] == values.min() and edges[-2] <= values.max() < edges[-1]
    assert counts == np.histogram(values, bins=edges)[0].tolist()


def test_histogram_of_nothing_is_none() -> None:
    assert histogram(array("i")) is None


def _write(tmp_path: Path, examples: list[dict[str, Any]]) -> Path:
    path = tmp_path / "examples.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path
