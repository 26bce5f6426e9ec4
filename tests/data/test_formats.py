"""Every caption format read from real files, their errors, and mixing sources by weight."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_clip.data.formats.coco import read_coco_captions
from lightning_clip.data.formats.csv import read_csv_captions
from lightning_clip.data.formats.folder import read_folder_captions
from lightning_clip.data.formats.jsonl import read_jsonl_captions
from lightning_clip.data.records import ReadReport
from lightning_clip.data.sampling import mixture_order, quotas
from lightning_clip.data.sources import CaptionSource, read_source
from lightning_clip.errors import InputError
from tests.conftest import shared_data
from tests.data.test_datamodule import make_datamodule, make_images


def _coco_annotations() -> list[dict]:
    root = shared_data("coco_captions_mini")
    lines = (root / "annotations.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.data
def test_real_jsonl_one_object_per_image_gives_five_captions_each():
    root = shared_data("coco_captions_mini")
    records = read_source(CaptionSource(str(root / "annotations.jsonl")), ReadReport())
    assert len(records) == 338
    assert all(len(record.captions) == 5 and record.image_path.is_file() for record in records)
    first = _coco_annotations()[0]
    assert records[0].captions == first["captions"]
    assert records[0].image_path == (root / first["file"]).resolve()


@pytest.mark.data
def test_real_csv_one_row_per_caption_matches_the_jsonl():
    root = shared_data("coco_captions_mini")
    source = CaptionSource(str(root / "captions.csv"), image_key="file")
    records = read_source(source, ReadReport())
    by_image = {r.image_path: r.captions for r in read_jsonl_captions(root / "annotations.jsonl")}
    assert {r.image_path: r.captions for r in records} == by_image


@pytest.mark.data
def test_coco_captions_json_written_from_real_annotations(tmp_path):
    root = shared_data("coco_captions_mini")
    annotations = _coco_annotations()
    document = {
        "images": [{"id": a["image_id"], "file_name": Path(a["file"]).name} for a in annotations],
        "annotations": [
            {"id": 10 * a["image_id"] + n, "image_id": a["image_id"], "caption": caption}
            for a in annotations for n, caption in enumerate(a["captions"])
        ],
    }  # fmt: skip
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(document))
    records = read_source(CaptionSource(str(path), images_dir=str(root / "images")), ReadReport())
    assert len(records) == 338
    assert sum(len(record.captions) for record in records) == 1690
    assert all(record.image_path.is_file() for record in records)
    assert records[5].captions == annotations[5]["captions"]


@pytest.mark.data
def test_image_folder_with_sidecar_text_from_real_cifar_images(tmp_path):
    cifar = shared_data("cifar10_test")
    folder = tmp_path / "photos"
    for label in ("cat", "ship"):
        (folder / label).mkdir(parents=True)
        for index in range(3):
            image = folder / label / f"{index}.jpg"
            image.write_bytes((cifar / "images" / label / f"{index:04d}.jpg").read_bytes())
            image.with_suffix(".txt").write_text(f"a photo of a {label}\n\nthe {label} {index}\n")
    (folder / "cat" / "3.jpg").write_bytes((cifar / "images/cat/0003.jpg").read_bytes())
    (folder / "cat" / "4.jpg").write_bytes((cifar / "images/cat/0004.jpg").read_bytes())
    (folder / "cat" / "4.txt").write_text("  \n")

    report = ReadReport()
    records = read_folder_captions(folder, report=report)
    assert [r.image_path.relative_to(folder.resolve()).as_posix() for r in records] == [
        "cat/0.jpg", "cat/1.jpg", "cat/2.jpg", "ship/0.jpg", "ship/1.jpg", "ship/2.jpg",
    ]  # fmt: skip
    assert records[4].captions == ["a photo of a ship", "the ship 1"]
    assert report.uncaptioned_images == 2  # no text file, and an empty one
    assert read_source(CaptionSource(str(folder)), ReadReport())[0].captions == records[0].captions


def test_jsonl_one_object_per_caption_merges_by_image(tmp_path):
    lines = [
        {"image": "a.png", "text": "first"},
        {"image": "b.png", "text": ["b one", "b two"]},
        {"image": "a.png", "text": "second", "other": 3},
        {"image": "a.png", "text": "   "},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    report = ReadReport()
    records = read_jsonl_captions(path, "image", "text", report)
    assert [(r.image_path.name, r.captions) for r in records] == [
        ("a.png", ["first", "second"]),
        ("b.png", ["b one", "b two"]),
    ]
    assert report.empty_captions == 1
    assert records[0].source == f"{path}:1"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"file": "a.png", "captions": ["x"]', "not a JSON object"),
        ('["a.png", "x"]', "expected a JSON object"),
        ('{"file": "a.png"}', "no key 'captions'"),
        ('{"file": "", "captions": "x"}', "must be a non-empty path"),
        ('{"file": "a.png", "captions": [1, 2]}', "string or a list of strings"),
    ],
)
def test_jsonl_errors_name_file_and_line(line, message, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"file": "ok.png", "captions": "fine"}\n' + line + "\n")
    with pytest.raises(InputError, match=f"bad.jsonl:2: .*{message}"):
        read_jsonl_captions(path)


def test_jsonl_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"file": "a.png", "captions": "ok"}\n{"file": "b.png", "captions": "\xff"}\n'
    )
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid UTF-8"):
        read_jsonl_captions(path)


def test_coco_errors_name_what_is_wrong(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="'images' and 'annotations'"):
        read_coco_captions(path)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"image_id": 2, "caption": "x"}]}))  # fmt: skip
    with pytest.raises(InputError, match=r"annotations\[0\]: image_id 2 is not in 'images'"):
        read_coco_captions(path)
    path.write_text('{"images": [')
    with pytest.raises(InputError, match="captions.json:1: not valid JSON"):
        read_coco_captions(path)


def test_unknown_or_unguessable_format_lists_the_valid_ones(tmp_path):
    with pytest.raises(InputError, match=r"unknown caption format 'parquet'; valid: \('csv'"):
        read_source(CaptionSource("x.parquet", format="parquet"), ReadReport())
    with pytest.raises(InputError, match="cannot tell the caption format"):
        read_source(CaptionSource(str(tmp_path / "x.dat")), ReadReport())
    with pytest.raises(InputError, match="weight=0 is not allowed"):
        read_source(CaptionSource("x.csv", weight=0), ReadReport())


def test_quotas_follow_weights_and_fill_the_epoch():
    assert quotas([10, 30], [3.0, 1.0]) == [30, 10]
    assert quotas([10, 30], [1.0, 1.0]) == [20, 20]
    assert sum(quotas([7, 5, 3], [0.2, 0.5, 0.3])) == 15


def test_mixture_walks_a_small_source_fully_before_repeating():
    order = mixture_order([10, 30], [3.0, 1.0], torch.Generator().manual_seed(0))
    small = Counter(index for index in order if index < 10)
    large = [index for index in order if index >= 10]
    assert len(order) == 40
    assert set(small.values()) == {3}  # 30 draws from 10 images: each exactly 3 times
    assert len(large) == len(set(large)) == 10  # a random third of the large source


def test_datamodule_mixes_sources_of_different_formats(tmp_path, caption_tokenizer):
    names = make_images(tmp_path / "png", 8)
    csv_path = tmp_path / "png" / "table.csv"
    csv_path.write_text("image,caption\n" + "".join(f"{n},csv {n}\n" for n in names))
    folder = tmp_path / "folder"
    for name in make_images(folder, 4):
        (folder / name).with_suffix(".txt").write_text(f"folder {name}\n")

    sources = [CaptionSource(str(csv_path), weight=1.0), CaptionSource(str(folder), weight=3.0)]
    datamodule = make_datamodule(None, caption_tokenizer, train_sources=sources, val_fraction=0)
    assert datamodule.train_mixture == [(8, 1.0), (4, 3.0)]
    datamodule.setup("fit")
    order = [index for index, _ in datamodule.train_dataloader().sampler]
    from_folder = sum(index >= 8 for index in order)
    assert len(order) == 12 and from_folder == 9  # three quarters of the epoch


def test_train_file_and_sources_together_are_refused(tmp_path, caption_tokenizer):
    with pytest.raises(InputError, match="train_file or train_sources, not both"):
        make_datamodule("a.csv", caption_tokenizer, train_sources=[CaptionSource("b.csv")])
    with pytest.raises(InputError, match="no training data"):
        make_datamodule(None, caption_tokenizer)


_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.tuples(_text, _text), max_size=8), header=st.booleans())
def test_random_csv_content_reads_or_fails_with_an_input_error(tmp_path, rows, header):
    path = tmp_path / "random.csv"
    lines = (["image,caption"] if header else []) + [f"{a},{b}" for a, b in rows]
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        records = read_csv_captions(path)
    except InputError:
        return
    assert all(caption.strip() for record in records for caption in record.captions)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    objects=st.lists(
        st.dictionaries(st.sampled_from(["file", "captions", "x"]),
                        st.one_of(_text, st.lists(_text, max_size=3), st.integers(), st.none()),
                        max_size=3),
        max_size=6,
    ),
    garbage=st.binary(max_size=20),
)  # fmt: skip
def test_random_jsonl_content_reads_or_fails_with_an_input_error(tmp_path, objects, garbage):
    path = tmp_path / "random.jsonl"
    path.write_bytes(b"\n".join(json.dumps(o).encode() for o in objects) + b"\n" + garbage)
    try:
        records = read_jsonl_captions(path)
    except InputError:
        return
    assert all(caption.strip() for record in records for caption in record.captions)


def test_source_mapping_with_an_unknown_key_lists_the_valid_ones():
    from lightning_clip.data.sources import as_source

    assert as_source({"path": "a.csv", "weight": 2}).weight == 2
    with pytest.raises(InputError, match=r"unexpected keyword argument 'wieght'.*valid keys"):
        as_source({"path": "a.csv", "wieght": 2})
