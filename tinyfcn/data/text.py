"""The one reader of a data set's text files (split lists, class_names.txt, palette.txt)."""

from __future__ import annotations

from pathlib import Path

from tinyfcn.data.errors import DataError

_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file; a byte-order mark (as Windows editors write) is
    dropped, any other encoding is a `DataError` naming the file and the problem."""
    data = Path(path).read_bytes()
    if data.startswith(_UTF16_MARKS) or b"\0" in data:  # NUL bytes: UTF-16 without a mark
        raise DataError(f"{path}: is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: is not UTF-8 text (byte {data[e.start]:#04x} at offset "
                        f"{e.start}); save it as UTF-8") from None
