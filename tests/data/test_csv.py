import re

import pytest

from lightning_clip.data.formats.csv import read_csv_captions
from lightning_clip.data.records import ReadReport


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_of_one_image_become_one_record_with_captions_in_order(tmp_path):
    table = write(
        tmp_path / "captions.csv",
        "image,caption\n"
        "a.png,first of a\n"
        "b.png,only b\n"
        "a.png,second of a\n"
        'a.png,"third of a, with a comma"\n',
    )

    records = read_csv_captions(table)

    assert [record.image_path.name for record in records] == ["a.png", "b.png"]
    assert records[0].captions == ["first of a", "second of a", "third of a, with a comma"]
    assert records[1].captions == ["only b"]
    assert records[0].source == f"{table}:2"
    assert records[1].source == f"{table}:3"


def test_image_paths_are_relative_to_the_table_not_the_working_directory(tmp_path, monkeypatch):
    table = write(
        tmp_path / "set" / "captions.csv",
        "image,caption\nimages/a.png,a\n../elsewhere/b.png,b\n  spaced.png  ,c\n",
    )
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    paths = [record.image_path for record in read_csv_captions(table)]

    assert paths == [
        (tmp_path / "set" / "images" / "a.png").resolve(),
        (tmp_path / "elsewhere" / "b.png").resolve(),
        (tmp_path / "set" / "spaced.png").resolve(),
    ]
    assert all(path.is_absolute() and ".." not in path.parts for path in paths)


def test_same_image_named_two_ways_is_one_record(tmp_path):
    table = write(tmp_path / "c.csv", "image,caption\na.png,one\n./sub/../a.png,two\n")
    records = read_csv_captions(table)
    assert len(records) == 1
    assert records[0].captions == ["one", "two"]


@pytest.mark.parametrize("suffix", [".tsv", ".TSV", ".tab"])
def test_tab_separated_by_extension(suffix, tmp_path):
    table = write(
        tmp_path / f"captions{suffix}",
        "image\tcaption\na.png\ta dog, a cat, and a bird\nb.png\tsemi; colon\n",
    )

    records = read_csv_captions(table)

    assert [record.captions for record in records] == [
        ["a dog, a cat, and a bird"],
        ["semi; colon"],
    ]


def test_explicit_delimiter_and_column_names(tmp_path):
    table = write(tmp_path / "c.txt", "caption|file\nhello|a.png\n")
    records = read_csv_captions(table, image_column="file", delimiter="|")
    assert records[0].image_path.name == "a.png"
    assert records[0].captions == ["hello"]


def test_missing_value_words_are_kept_as_captions(tmp_path):
    words = ["NA", "null", "None", "nan", "N/A", "NULL"]
    rows = "".join(f"a.png,{word}\n" for word in words)
    table = write(tmp_path / "c.csv", "image,caption\n" + rows)
    report = ReadReport()

    records = read_csv_captions(table, report=report)

    assert records[0].captions == words
    assert report.empty_captions == 0


def test_empty_captions_are_dropped_and_counted(tmp_path):
    table = write(
        tmp_path / "c.csv",
        'image,caption\na.png,kept\na.png,\na.png,"   "\nb.png,\t\nc.png\na.png,also kept\n',
    )
    report = ReadReport()

    records = read_csv_captions(table, report=report)

    # b.png and c.png had only empty captions, so they disappear
    assert [record.image_path.name for record in records] == ["a.png"]
    assert records[0].captions == ["kept", "also kept"]
    assert report.empty_captions == 4


def test_empty_image_value_names_file_and_line(tmp_path):
    table = write(tmp_path / "c.csv", "image,caption\na.png,fine\n ,orphan caption\n")
    with pytest.raises(ValueError, match=re.escape(f"{table}:3")):
        read_csv_captions(table)


def test_missing_column_names_file_and_lists_header(tmp_path):
    table = write(tmp_path / "c.csv", "path,text\na.png,hello\n")

    with pytest.raises(ValueError) as error:
        read_csv_captions(table)

    message = str(error.value)
    assert str(table) in message
    assert "image" in message and "caption" in message
    assert "['path', 'text']" in message


def test_non_utf8_file_names_the_file(tmp_path):
    table = tmp_path / "latin1.csv"
    table.write_bytes("image,caption\na.png,café crème\n".encode("latin-1"))

    with pytest.raises(ValueError, match=re.escape(str(table))):
        read_csv_captions(table)


def test_non_utf8_byte_late_in_a_large_file_names_the_file(tmp_path):
    table = tmp_path / "late.csv"
    good = "".join(f"img{index}.png,caption number {index}\n" for index in range(2000))
    table.write_bytes(("image,caption\n" + good).encode() + b"z.png,caf\xe9\n")

    with pytest.raises(ValueError, match=re.escape(str(table))):
        read_csv_captions(table)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_csv_captions(tmp_path / "nowhere.csv")


def test_directory_instead_of_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_csv_captions(tmp_path)


def test_utf8_file_with_byte_order_mark_is_read(tmp_path):
    table = tmp_path / "excel.csv"
    table.write_bytes("image,caption\na.png,café\n".encode("utf-8-sig"))

    records = read_csv_captions(table)

    assert records[0].captions == ["café"]


def test_unclosed_quote_is_an_error_naming_the_line(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text('image,caption\na.png,fine\nb.png,"the digit three, drawn\nc.png,x\n')
    with pytest.raises(ValueError, match=r"captions.csv:3: malformed row"):
        read_csv_captions(table)


def test_unquoted_delimiter_in_a_caption_is_an_error_not_a_cut(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text("image,caption\na.png,fine\nb.png,a three, drawn by hand\n")
    with pytest.raises(ValueError, match=r"captions.csv:3: 3 fields but the header has 2"):
        read_csv_captions(table)


def test_quoted_multiline_caption_is_kept_and_reported(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text('image,caption\na.png,one\nb.png,"two\nlines"\nc.png,three\n')
    report = ReadReport()
    records = read_csv_captions(table, report=report)
    assert [r.captions for r in records] == [["one"], ["two\nlines"], ["three"]]
    assert report.multiline_captions == [f"{table}:3"]
    assert records[2].source == f"{table}:5"


def test_invalid_utf8_names_the_right_line(tmp_path):
    rows = ["image,caption"] + [f"{i}.png,caption {i}" for i in range(700)]
    data = ("\n".join(rows) + "\n").encode() + "701.png,caf\xe9\n".encode("latin-1")
    (tmp_path / "captions.csv").write_bytes(data)
    with pytest.raises(ValueError, match=r"captions.csv:702: not valid UTF-8"):
        read_csv_captions(tmp_path / "captions.csv")
