"""The data doctor finds missing and broken images, long, empty and repeated captions."""

from PIL import Image

from lightning_clip.data import doctor
from tests.test_cli import _tiny_args


def _table(tmp_path, rows):
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\n" + "".join(f"{image},{caption}\n" for image, caption in rows))
    return path


def test_doctor_reports_bad_images_and_captions_and_fails(tmp_path, digits_root, capsys):
    for index in range(6):
        Image.new("RGB", (20 + index, 10), (index * 40, 0, 0)).save(tmp_path / f"{index}.png")
    Image.new("L", (8, 8)).save(tmp_path / "grey.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    long = "a caption with far too many words for the tiny context"
    rows = [(f"{i}.png", "a red square") for i in range(6)] + [
        ("grey.png", long), ("broken.png", "fine"), ("gone.png", "lost"), ("0.png", " "),
    ]  # fmt: skip
    args = _tiny_args(tmp_path, digits_root) + [
        "--data.train_file", str(_table(tmp_path, rows)), "--data.val_fraction", "0",
    ]  # fmt: skip

    assert doctor.main(args) == 1
    out = capsys.readouterr().out
    assert "training: 8 images, 8 captions" in out
    assert "images missing: 1, unreadable: 1" in out
    assert "gone.png" in out and "broken.png" in out
    assert "image modes: {'RGB': 6, 'L': 1}" in out
    assert "smallest (8, 8), largest (25, 10)" in out
    assert "1 (12.5%) longer than context_length 8" in out
    assert "empty captions dropped: 1" in out
    assert "6 x 'a red square'" in out
    assert "result: errors found" in out


def test_doctor_passes_clean_data(tmp_path, digits_root, capsys):
    args = _tiny_args(tmp_path, digits_root)
    assert doctor.main(args) == 0
    out = capsys.readouterr().out
    assert "images missing: 0, unreadable: 0" in out and "result: no errors found" in out
