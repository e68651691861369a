"""Stream records out of an import file (CSV or JSON Lines) with their line numbers.

Memory stays constant: lines are decoded one at a time and no line may exceed MAX_LINE_BYTES.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MAX_LINE_BYTES = 1 << 20
FORMATS = ("csv", "jsonl")


class ImportFileError(Exception):
    """The file as a whole cannot be read; nothing is imported."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much per row
class Record:
    """One source row: its first line number and its fields, or why it could not be parsed."""

    line: int
    fields: dict[str, Any] | None
    error: str | None = None
    raw: str = ""  # the row as read (with the CSV header), for change detection


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    return "csv"


class LineSource:
    """Decode a binary stream line by line, counting lines and bytes, refusing huge lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.line_number = 0
        self.bytes_read = 0
        self.oversized_lines: list[int] = []

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self.stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            self.line_number += 1
            self.bytes_read += len(raw)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                self.oversized_lines.append(self.line_number)
                self.skip_rest_of_line()
                yield "\n"
                continue
            if self.line_number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ImportFileError(
                    f"line {self.line_number}: the file is not UTF-8 text; save it as UTF-8 "
                    "(CSV UTF-8 in Excel) and import again"
                ) from None

    def skip_rest_of_line(self) -> None:
        while True:
            chunk = self.stream.readline(MAX_LINE_BYTES)
            self.bytes_read += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return


HeaderCheck = Callable[[list[str]], str | None]


def read_csv(source: LineSource, check_header: HeaderCheck) -> Iterator[Record]:
    reader = csv.reader(source, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty: expected a header row") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: cannot read the header row: {exc}") from None
    columns = [name.strip().lower() for name in header]
    header_key = "\x1f".join(columns) + "\x1e"
    if len(set(columns)) != len(columns):
        raise ImportFileError("line 1: the header names a column twice")
    problem = check_header(columns)
    if problem:
        raise ImportFileError(f"line 1: {problem}")
    rows = 0
    for record in csv_rows(source, reader, columns, header_key):
        rows += 1
        yield record
    if not rows:
        # A header alone is a truncated or wrong export far more often than 0 accounts.
        raise ImportFileError("line 1: a header and no rows after it")


def csv_rows(
    source: LineSource, reader: Iterator[list[str]], columns: list[str], header_key: str
) -> Iterator[Record]:
    """The rows after the header, blank lines left out."""
    while True:
        start = source.line_number + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Record(start, None, f"not valid CSV: {exc}")
            continue
        if source.oversized_lines and source.oversized_lines[-1] >= start:
            yield Record(start, None, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        if len(values) > len(columns):
            # Even empty extra cells: the row does not line up with the header, so its values
            # may sit under the wrong column names.
            counts = f"expected {len(columns)} fields, found {len(values)}"
            yield Record(start, None, f"{counts}: more columns than the header")
            continue
        if not any(map(str.strip, values)):
            continue  # blank lines (or a spreadsheet's empty rows, ",,,") carry nothing
        if len(values) != len(columns):
            yield Record(start, None, f"expected {len(columns)} fields, found {len(values)}")
            continue
        raw = header_key + "\x1f".join(values)
        # The lengths were compared above; zip's own strict check would cost a third more.
        yield Record(start, dict(zip(columns, values, strict=False)), None, raw)


def read_jsonl(source: LineSource) -> Iterator[Record]:
    rows = 0
    for record in jsonl_rows(source):
        rows += 1
        yield record
    if not source.line_number:
        raise ImportFileError("the file is empty: expected one JSON object per line")
    if not rows:
        raise ImportFileError(
            f"line {source.line_number}: only blank lines; expected one JSON object per line"
        )


def jsonl_rows(source: LineSource) -> Iterator[Record]:
    """One record per line that is not blank."""
    for text in source:
        line = source.line_number
        if source.oversized_lines and source.oversized_lines[-1] == line:
            yield Record(line, None, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Record(line, None, f"not valid JSON: {exc.msg}")
            continue
        if not isinstance(value, dict):
            yield Record(line, None, "expected a JSON object")
            continue
        yield Record(line, {str(k).lower(): v for k, v in value.items()}, None, text.strip())


def iter_records(
    stream: IO[bytes], file_format: str, check_header: HeaderCheck
) -> tuple[LineSource, Iterator[Record]]:
    """Return the line source (for progress) and an iterator of records."""
    source = LineSource(stream)
    if file_format == "csv":
        return source, read_csv(source, check_header)
    if file_format == "jsonl":
        return source, read_jsonl(source)
    raise ImportFileError(f"unknown format {file_format!r}: use one of {', '.join(FORMATS)}")
