"""A folder of CSV files read as streamed fragments, one file at a time.

CSV has no footer, so the listing counts each file's records by counting its line ends, in
1 MiB reads (once per file, size and modification time in a process: see
:func:`~pipelines.data.streaming.list_fragments`), and reads the header line for the column
names. A file is one fragment, so a file's size bounds a reader's memory: write the data as
many part files (as Spark and most exporters do), not one huge file.

Counting line ends assumes one record a line. A value with a line break inside quotes, or
blank lines, make the count differ from the rows the reader parses; the read then stops with a
DataError naming the file and both counts, never with rows silently gained or lost.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from pipelines.errors import DataError

#: Bytes read at a time while counting a file's records.
_CHUNK = 1 << 20


def csv_header(handle: Any, path: str) -> tuple[tuple[str, ...], int]:
    """Return a CSV file's column names and its record count (line ends, header excluded).

    Raises:
        DataError: For a file with no header line, or one that is not UTF-8 text.

    """
    first = b""
    lines, last = 0, b"\n"
    while chunk := handle.read(_CHUNK):
        if not first:
            first = chunk
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    if last != b"\n":
        lines += 1  # a last record without a line end
    head = first.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        names = next(csv.reader([head.decode("utf-8")]), [])
    except UnicodeDecodeError:
        raise DataError(
            f"{path} is not UTF-8 text", key="data.path", fix="write the CSV as UTF-8"
        ) from None
    if not names or lines < 1:
        raise DataError(f"{path} has no header line", key="data.path", fix="add a header line")
    return tuple(names), lines - 1


def read_csv_file(handle: Any, path: str, columns: tuple[str, ...]) -> Any:
    """Read a CSV file's ``columns`` as an Arrow table.

    Raises:
        DataError: Naming the file and the record pyarrow could not parse.

    """
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    try:
        return pa_csv.read_csv(
            io.BytesIO(handle.read()),
            convert_options=pa_csv.ConvertOptions(include_columns=list(columns)),
        )
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: cannot read a record ({detail})",
            key="data.path",
            fix="fix or remove the malformed record; no rows are skipped silently",
        ) from None
