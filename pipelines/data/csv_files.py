"""CSV files read as streamed fragments: byte ranges of whole lines, each with its header.

CSV has no footer, so the listing reads each file once (in 1 MiB reads; once per file, size and
modification time in a process: see :func:`~pipelines.data.streaming.list_fragments`): it takes
the column names from the header line and cuts the rest into ranges of at least
:data:`RANGE_BYTES` that end at a line end, counting each range's line ends as its records. A
range is one fragment; a reader reads the header and its range only, so a reader's memory is
bounded by the range, whatever the file's size.

Counting line ends assumes one record a line. A value with a line break inside quotes, or a
blank line, make the count differ from the records the reader parses; the read then stops with
a DataError naming the file, the byte range and both counts, never with rows silently gained or
lost.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from pipelines.errors import DataError

#: Bytes read at a time while listing a file.
_CHUNK = 1 << 20
#: A fragment's least size: a range of whole lines at least this long (the last may be shorter).
RANGE_BYTES = 64 << 20

#: One range of a file: (offset, length in bytes, records).
Span = tuple[int, int, int]


def csv_layout(
    handle: Any, path: str, range_bytes: int = RANGE_BYTES
) -> tuple[tuple[str, ...], list[Span]]:
    """Return a CSV file's column names and its ranges of whole lines, with their records.

    Raises:
        DataError: For a file with no header line, or a header that is not UTF-8 text.

    """
    head, data_start, pos, last = b"", -1, 0, b"\n"
    spans: list[Span] = []
    start, rows = 0, 0
    while chunk := handle.read(_CHUNK):
        i = 0
        if data_start < 0:
            head += chunk
            newline = head.find(b"\n")
            if newline < 0:
                pos += len(chunk)
                continue
            data_start = start = newline + 1
            i = data_start - pos
        while pos + len(chunk) > start + range_bytes:
            cut = chunk.find(b"\n", max(i, start + range_bytes - pos))
            if cut < 0:
                break
            rows += chunk.count(b"\n", i, cut + 1)
            spans.append((start, pos + cut + 1 - start, rows))
            start, rows, i = pos + cut + 1, 0, cut + 1
        rows += chunk.count(b"\n", i)
        last = chunk[-1:]
        pos += len(chunk)
    if data_start < 0:  # no line end at all: a header alone, or nothing
        head += b"\n"
        data_start = start = pos
    if pos > start:
        spans.append((start, pos - start, rows + (last != b"\n")))
    return _names(head[: head.find(b"\n")], path), spans


def _names(line: bytes, path: str) -> tuple[str, ...]:
    try:
        names = next(csv.reader([line.rstrip(b"\r").decode("utf-8")]), [])
    except UnicodeDecodeError:
        raise DataError(
            f"{path} is not UTF-8 text", key="data.path", fix="write the CSV as UTF-8"
        ) from None
    if not names:
        raise DataError(f"{path} has no header line", key="data.path", fix="add a header line")
    return tuple(names)


def read_csv_range(
    handle: Any, path: str, columns: tuple[str, ...], offset: int, length: int
) -> Any:
    """Read the records of one range of a CSV file, with its header, as an Arrow table.

    Raises:
        DataError: Naming the file, the byte range and the record pyarrow could not parse.

    """
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    header = b""
    while b"\n" not in header and (piece := handle.read(1 << 16)):
        header += piece
    handle.seek(offset)
    body = handle.read(length)
    try:
        return pa_csv.read_csv(
            io.BytesIO(header[: header.find(b"\n") + 1] + body),
            convert_options=pa_csv.ConvertOptions(include_columns=list(columns)),
        )
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}, bytes {offset}-{offset + length}: cannot read a record ({detail})",
            key="data.path",
            fix="fix or remove the malformed record; no rows are skipped silently",
        ) from None
