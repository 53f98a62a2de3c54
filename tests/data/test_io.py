from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedsynth.data.io import TableFormatError, read_table

FRAME = pd.DataFrame({"age": [61, 70], "site": ["Hôpital Nord", "Sud"], "t": [10, 20], "e": [0, 1]})


def test_latin1_csv_is_refused_naming_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    FRAME.to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(TableFormatError) as caught:
        read_table(path)
    message = str(caught.value)
    assert str(path) in message and "not UTF-8" in message and "line 2" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_duplicate_csv_column_is_refused_not_renamed(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("age,bmi,age,t,e\n61,25.1,62,10,0\n")
    with pytest.raises(TableFormatError, match=r"names a column more than once \('age' at columns 1, 3\)"):
        read_table(path)


def test_duplicate_parquet_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array([1]), pa.array([2]), pa.array([3])], names=["age", "age", "t"]), path)
    with pytest.raises(TableFormatError, match=r"dup.parquet names a column more than once \('age'"):
        read_table(path)


@pytest.mark.parametrize(("separator", "label"), [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_other_separators_get_a_hint(tmp_path: Path, separator: str, label: str) -> None:
    path = tmp_path / "other.csv"
    FRAME.to_csv(path, index=False, sep=separator)
    with pytest.raises(TableFormatError, match=f"looks {label}-delimited .* 4 columns .*re-save it with commas"):
        read_table(path)


def test_empty_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(TableFormatError, match="empty.csv is empty"):
        read_table(empty)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(TableFormatError, match="broken.parquet is not a readable Parquet file"):
        read_table(broken)
