import json
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from lightning_clip.data.formats.labelled import read_labelled_images
from tests.conftest import shared_data


def make_tree(root: Path, layout: dict[str, list[str]]) -> Path:
    """root/<folder>/<file> for each folder and file; image suffixes get a real image."""
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix in (".png", ".jpg", ".JPG"):
                Image.new("RGB", (4, 4)).save(path, format="PNG")
            else:
                path.write_text("not an image")
    return root


def relative(samples, root: Path) -> list[tuple[str, int]]:
    return [(path.relative_to(root).as_posix(), label) for path, label in samples]


def test_image_folder_labels_by_class_name_folders(tmp_path):
    root = make_tree(
        tmp_path / "set",
        {"cat": ["b.png", "a.jpg", "notes.txt"], "dog": ["c.png", "deep/d.JPG"]},
    )

    # class order differs from the sorted folder order: labels must follow the names
    samples = read_labelled_images(root, ["dog", "cat"])

    assert relative(samples, root) == [
        ("cat/a.jpg", 1),
        ("cat/b.png", 1),
        ("dog/c.png", 0),
        ("dog/deep/d.JPG", 0),
    ]


def test_image_folder_with_other_names_uses_sorted_folders_in_class_order(tmp_path):
    root = make_tree(tmp_path / "set", {"1_second": ["x.png"], "0_first": ["y.png", "z.png"]})

    samples = read_labelled_images(root, ["zebra", "apple"])

    assert relative(samples, root) == [
        ("0_first/y.png", 0),
        ("0_first/z.png", 0),
        ("1_second/x.png", 1),
    ]


def test_image_folder_with_wrong_number_of_classes_is_rejected(tmp_path):
    root = make_tree(tmp_path / "set", {"cat": ["a.png"], "dog": ["b.png"]})
    with pytest.raises(ValueError, match="2 class folders but 3 class names"):
        read_labelled_images(root, ["cat", "dog", "bird"])


def test_image_folder_without_images_is_rejected(tmp_path):
    root = make_tree(tmp_path / "set", {"cat": ["readme.txt"], "dog": []})
    with pytest.raises(ValueError, match="no labelled images"):
        read_labelled_images(root, ["cat", "dog"])


def test_csv_labels_as_class_names(tmp_path):
    table = tmp_path / "set" / "labels.csv"
    table.parent.mkdir()
    table.write_text("image,label\nimg/a.png,dog\nimg/b.png, cat \n../c.png,bird\n")

    samples = read_labelled_images(table, ["cat", "dog", "bird"])

    assert samples == [
        ((tmp_path / "set" / "img" / "a.png").resolve(), 1),
        ((tmp_path / "set" / "img" / "b.png").resolve(), 0),
        ((tmp_path / "c.png").resolve(), 2),
    ]


def test_csv_labels_as_indices_with_custom_columns(tmp_path):
    table = tmp_path / "labels.tsv"
    table.write_text("file\ty\na.png\t2\nb.png\t0\nc.png\t1\n")

    samples = read_labelled_images(
        table, ["cat", "dog", "bird"], image_column="file", label_column="y"
    )

    assert [(path.name, label) for path, label in samples] == [
        ("a.png", 2),
        ("b.png", 0),
        ("c.png", 1),
    ]


def test_class_names_win_over_indices_when_a_name_is_a_number(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("image,label\na.png,1\nb.png,0\n")
    # class "1" sits at index 0, so the label "1" means class 0, not index 1
    samples = read_labelled_images(table, ["1", "0"])
    assert [label for _, label in samples] == [0, 1]


@pytest.mark.parametrize("bad_label", ["horse", "3", "-1", "1.0", ""])
def test_unknown_label_names_file_and_line(bad_label, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text(f"image,label\na.png,cat\nb.png,1\nc.png,{bad_label}\nd.png,dog\n")

    with pytest.raises(ValueError, match=re.escape(f"{table}:4")):
        read_labelled_images(table, ["cat", "dog", "bird"])


def test_csv_missing_label_column_names_the_file(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("image,class\na.png,cat\n")
    with pytest.raises(ValueError, match=re.escape(str(table))):
        read_labelled_images(table, ["cat"])


@pytest.mark.data
def test_cifar10_test_split_reads_the_same_from_folders_and_labels_csv():
    root = shared_data("cifar10_test")
    class_names = json.loads((root / "classes.json").read_text())

    from_folders = read_labelled_images(root / "images", class_names)
    from_csv = read_labelled_images(
        root / "labels.csv", class_names, image_column="file", label_column="label"
    )
    from_names = read_labelled_images(
        root / "labels.csv", class_names, image_column="file", label_column="class_name"
    )

    assert len(class_names) == 10
    assert len(from_folders) == 10_000
    assert Counter(label for _, label in from_folders) == dict.fromkeys(range(10), 1000)
    assert sorted(from_csv) == sorted((path.resolve(), label) for path, label in from_folders)
    assert from_names == from_csv
    airplane = [path for path, label in from_folders if label == 0]
    assert all(path.parent.name == "airplane" for path in airplane)


def test_row_without_label_field_names_file_and_line(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("image,label\na.png,cat\nb.png\n")

    with pytest.raises(ValueError, match=re.escape(f"{table}:3")):
        read_labelled_images(table, ["cat", "dog"])
