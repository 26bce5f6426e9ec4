"""Class names and prompt templates: the project's own small sets and readers for files."""

import json
from pathlib import Path

import yaml

from lightning_clip.errors import InputError, MissingInputError

# A class is one name or a list of synonyms whose prompts are averaged together.
ClassName = str | list[str]

# The ten digit classes of the built-in handwritten-digits data, as words.
DIGIT_CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def read_prompt_file(path: str | Path, key: str | None = None) -> dict:
    """Read {"classes": [...], "templates": [...]} from JSON or YAML, or a plain-text list.

    A file with several datasets (``{"CIFAR10": {"classes": ..., "templates": ...}, ...}``)
    needs `key` to pick one. A .txt file holds one entry per line and is returned as
    ``{"lines": [...]}``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such prompt file")

    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return {"lines": [line.strip() for line in text.splitlines() if line.strip()]}

    content = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if key is not None:
        if not isinstance(content, dict) or key not in content:
            available = sorted(k for k in content if not k.startswith("_"))
            raise InputError(f"{path}: no entry {key!r}; available: {available}")
        content = content[key]
    if isinstance(content, list):
        return {"lines": content}
    return content


def resolve_prompts(
    class_names: list[ClassName] | str,
    templates: list[str] | str,
    prompts_key: str | None = None,
) -> tuple[list[ClassName], list[str]]:
    """Each argument is a list or a path to a file (see `read_prompt_file`)."""
    if isinstance(class_names, str):
        content = read_prompt_file(class_names, prompts_key)
        class_names = content.get("classes", content.get("lines"))
    if isinstance(templates, str):
        content = read_prompt_file(templates, prompts_key)
        templates = content.get("templates", content.get("lines"))

    if not class_names:
        raise InputError("zero-shot: no class names")
    if not templates:
        raise InputError("zero-shot: no prompt templates")
    bad = [template for template in templates if "{}" not in template]
    if bad:
        raise InputError(f"zero-shot: templates without a '{{}}' placeholder: {bad[:3]}")
    return list(class_names), list(templates)
