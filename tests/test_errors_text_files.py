"""Task text files that are not UTF-8: one line naming the file, the byte offset and a conversion command."""

from __future__ import annotations

import pytest
from cli_harness import digest, run_inprocess, with_prior_results

from saeeval.tasks.toxicity import read_toxicity_csv

CSV = "phrase,toxicity,identity\nthe café owner is kind,nontoxic,all\nthey are awful,toxic,all\n"
CORPUS = "the cat sat on the mat\n\u201cquoted\u201d text here\n"


@pytest.mark.parametrize(
    ("task", "option", "name", "data", "bad"),
    [
        ("toxicity", "task.csv_path", "latin1.csv", CSV.encode("latin-1"), b"\xe9"),
        ("lm", "task.path", "cp1252.txt", CORPUS.encode("cp1252"), b"\x93"),
        ("lm", "task.path", "utf16.jsonl", '{"text": "hello"}\n'.encode("utf-16"), b"\xff"),
    ],
)
def test_non_utf8_file_names_file_offset_and_fix(tmp_path, capfd, task, option, name, data, bad):
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "out"
    before = with_prior_results(out)
    outcome = run_inprocess(f"+task={task}", f"{option}={path}", "force=true", out=out, capfd=capfd)
    offset = data.index(bad)  # the first byte no UTF-8 decoder accepts, found independently
    outcome.assert_one_line_error(
        f"{option}='{path}' is not UTF-8", f"byte 0x{bad.hex()} at offset {offset}", "iconv -f latin1 -t utf-8"
    )
    assert digest(out) == before


def test_utf8_with_byte_order_mark_is_read_like_plain_utf8(tmp_path):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text(CSV, encoding="utf-8")
    bom.write_text(CSV, encoding="utf-8-sig")  # what Excel's "CSV UTF-8" writes
    rows = read_toxicity_csv(bom)
    assert rows == read_toxicity_csv(plain) and rows[0].phrase == "the café owner is kind"
