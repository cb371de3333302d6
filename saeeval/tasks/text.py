"""Read a user's text file (CSV, corpus) as UTF-8, or fail with one line naming the file, the first bad byte
and how to convert it; a UTF-8 byte-order mark (Excel's "CSV UTF-8") is accepted and dropped."""

from __future__ import annotations

from pathlib import Path

from saeeval.errors import SaeevalError


def read_utf8(path: Path, option: str) -> str:
    """The text of `path`, given on the command line as `option` (e.g. task.csv_path)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise SaeevalError(
            f"{option}={str(path)!r} is not UTF-8: byte 0x{data[err.start]:02x} at offset {err.start} (line {line}) "
            f"cannot be decoded; convert the file, e.g. `iconv -f latin1 -t utf-8 {path} > {Path(path).stem}.utf8"
            f"{Path(path).suffix}`"
        ) from None
