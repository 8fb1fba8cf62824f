"""The one reader of a data set's text files (split lists, class_names.txt, palette.txt)."""

from __future__ import annotations

import os
import stat

from tinyfcn.data.errors import DataError

_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
MAX_TEXT_BYTES = 64 << 20  # a split list of a million 20-character ids is 21 MB


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file; a byte-order mark (as Windows editors write) is
    dropped, any other encoding is a `DataError` naming the file and the problem. Only a
    regular file of at most MAX_TEXT_BYTES is read (a link to /dev/zero or a FIFO would
    never end)."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a FIFO blocks the open
        raise DataError(f"{path}: is not a regular file")
    with open(path, "rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise DataError(f"{path}: is larger than {MAX_TEXT_BYTES >> 20} MB, more than a list "
                        f"of ids or classes")
    if data.startswith(_UTF16_MARKS) or b"\0" in data:  # NUL bytes: UTF-16 without a mark
        raise DataError(f"{path}: is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: is not UTF-8 text (byte {data[e.start]:#04x} at offset "
                        f"{e.start}); save it as UTF-8") from None
