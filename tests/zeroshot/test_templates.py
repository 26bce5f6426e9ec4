import json

import pytest
import yaml

from lightning_clip.zeroshot.templates import read_prompt_file, resolve_prompts
from tests.conftest import shared_data

CLASSES = ["cat", "dog", ["car", "automobile"]]
TEMPLATES = ["a photo of a {}.", "a sketch of the {}"]


def test_lists_are_returned_unchanged():
    class_names, templates = resolve_prompts(CLASSES, TEMPLATES)
    assert class_names == CLASSES
    assert templates == TEMPLATES


def test_text_files_hold_one_entry_per_line(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\n  dog  \n\n\ncar\n")
    (tmp_path / "templates.txt").write_text("a photo of a {}.\n\n  a sketch of the {}\n")

    class_names, templates = resolve_prompts(
        str(tmp_path / "classes.txt"), str(tmp_path / "templates.txt")
    )

    assert class_names == ["cat", "dog", "car"]
    assert templates == TEMPLATES


def test_json_file_with_classes_and_templates(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"classes": CLASSES, "templates": TEMPLATES}))

    class_names, templates = resolve_prompts(str(path), str(path))

    assert class_names == CLASSES
    assert templates == TEMPLATES


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_file_with_classes_and_templates(suffix, tmp_path):
    path = tmp_path / f"prompts{suffix}"
    path.write_text(yaml.safe_dump({"classes": CLASSES, "templates": TEMPLATES}))

    class_names, templates = resolve_prompts(str(path), str(path))

    assert class_names == CLASSES
    assert templates == TEMPLATES


def test_file_for_classes_and_list_for_templates(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(["ant", "bee"]))
    assert resolve_prompts(str(path), ["{}"]) == (["ant", "bee"], ["{}"])


def test_prompts_key_picks_one_dataset_of_several(tmp_path):
    path = tmp_path / "many.json"
    content = {
        "_meta": {"source": "test"},
        "Pets": {"classes": ["cat", "dog"], "templates": ["a pet: {}."]},
        "Cars": {"classes": ["sedan"], "templates": ["a {} car.", "the {}."]},
    }
    path.write_text(json.dumps(content))

    class_names, templates = resolve_prompts(str(path), str(path), prompts_key="Cars")

    assert class_names == ["sedan"]
    assert templates == ["a {} car.", "the {}."]


def test_unknown_prompts_key_lists_the_datasets(tmp_path):
    path = tmp_path / "many.json"
    path.write_text(json.dumps({"_meta": {}, "Pets": {}, "Cars": {}}))

    with pytest.raises(ValueError) as error:
        read_prompt_file(path, key="Birds")

    message = str(error.value)
    assert str(path) in message and "'Birds'" in message
    assert "['Cars', 'Pets']" in message


def test_templates_without_placeholder_are_rejected():
    with pytest.raises(ValueError, match="no placeholder here"):
        resolve_prompts(["cat"], ["a photo of a {}.", "no placeholder here"])


def test_template_file_without_placeholder_is_rejected(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\na photo of a cat.\n")
    with pytest.raises(ValueError, match="a photo of a cat"):
        resolve_prompts(["cat"], str(path))


@pytest.mark.parametrize(
    ("class_names", "templates", "message"),
    [([], TEMPLATES, "no class names"), (CLASSES, [], "no prompt templates")],
)
def test_empty_lists_are_rejected(class_names, templates, message):
    with pytest.raises(ValueError, match=message):
        resolve_prompts(class_names, templates)


def test_missing_prompt_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        resolve_prompts(str(tmp_path / "absent.json"), TEMPLATES)


@pytest.mark.data
def test_real_clip_prompts_for_cifar10():
    path = shared_data("clip_zeroshot_prompts") / "prompts.json"

    class_names, templates = resolve_prompts(str(path), str(path), prompts_key="CIFAR10")

    assert len(class_names) == 10 and len(templates) == 18
    assert class_names[0] == "airplane" and class_names[-1] == "truck"
    assert "a photo of a {}." in templates
    assert all(template.count("{}") == 1 for template in templates)
