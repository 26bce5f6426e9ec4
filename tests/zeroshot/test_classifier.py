import math

import pytest
import torch
from torch.testing import assert_close

from lightning_clip.zeroshot.classifier import build_zeroshot_weights, class_prompts
from lightning_clip.zeroshot.templates import resolve_prompts
from tests.conftest import shared_data

WORDS = ["cat", "dog", "puppy", "car"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}", "{}!"]
NOISE = 0.7


class FakeTextEncoder:
    """Prompt -> one-hot of its word, plus template noise that cancels over the templates.

    Template t adds NOISE * (cos, sin) of 2*pi*t/T in two extra dimensions, so every prompt
    of a word has the same length and the templates' noise sums to zero. Each output is
    also scaled by t + 1, which only cancels if prompts are normalised before averaging.
    """

    def __init__(self, words: list[str], templates: list[str]):
        self.words, self.templates = words, templates
        self.lookup = {
            template.format(word): (word_index, template_index)
            for word_index, word in enumerate(words)
            for template_index, template in enumerate(templates)
        }
        assert len(self.lookup) == len(words) * len(templates)
        self.batch_sizes: list[int] = []

    @property
    def embed_dim(self) -> int:
        return len(self.words) + 2

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        self.batch_sizes.append(len(prompts))
        features = torch.zeros(len(prompts), self.embed_dim, dtype=torch.float64)
        for row, prompt in enumerate(prompts):
            word_index, template_index = self.lookup[prompt]
            angle = 2 * math.pi * template_index / len(self.templates)
            features[row, word_index] = 1.0
            features[row, -2:] = torch.tensor([math.cos(angle), math.sin(angle)]) * NOISE
            features[row] *= template_index + 1
        return features

    def word_vector(self, *words: str) -> torch.Tensor:
        """The expected class vector: the normalised mean of the words' one-hots."""
        vector = torch.zeros(self.embed_dim)
        for word in words:
            vector[self.words.index(word)] = 1.0
        return vector / vector.norm()


def test_class_prompts_fill_every_template_for_every_synonym():
    assert class_prompts("cat", ["a {}.", "{}!"]) == ["a cat.", "cat!"]
    assert class_prompts(["dog", "puppy"], ["a {}.", "{}!"]) == [
        "a dog.",
        "dog!",
        "a puppy.",
        "puppy!",
    ]


def test_weights_are_unit_columns_equal_to_the_class_word_vectors():
    encoder = FakeTextEncoder(WORDS, TEMPLATES)

    weights = build_zeroshot_weights(encoder, ["car", "cat", "dog"], TEMPLATES)

    expected = torch.stack(
        [encoder.word_vector("car"), encoder.word_vector("cat"), encoder.word_vector("dog")],
        dim=1,
    )  # (E, C)
    assert weights.shape == (encoder.embed_dim, 3)
    assert weights.dtype == torch.float32
    assert_close(weights.norm(dim=0), torch.ones(3))
    assert_close(weights, expected, atol=1e-6, rtol=0)


def test_synonyms_are_averaged_into_one_class():
    encoder = FakeTextEncoder(WORDS, TEMPLATES)

    weights = build_zeroshot_weights(encoder, ["cat", ["dog", "puppy"], "car"], TEMPLATES)

    # the dog class points halfway between "dog" and "puppy"
    assert_close(weights[:, 1], encoder.word_vector("dog", "puppy"), atol=1e-6, rtol=0)
    assert weights[1, 1].item() == pytest.approx(1 / math.sqrt(2))
    assert_close(weights[:, 0], encoder.word_vector("cat"), atol=1e-6, rtol=0)


def test_weights_classify_word_features_correctly():
    encoder = FakeTextEncoder(WORDS, TEMPLATES)
    weights = build_zeroshot_weights(encoder, ["cat", ["dog", "puppy"], "car"], TEMPLATES)

    image_features = torch.stack([encoder.word_vector(word) for word in WORDS])  # (4, E)
    predicted = (image_features @ weights).argmax(dim=1)

    assert predicted.tolist() == [0, 1, 1, 2]


@pytest.mark.parametrize(("batch_size", "calls"), [(1, [1] * 12), (5, [5, 5, 2]), (1000, [12])])
def test_batching_changes_calls_but_not_weights(batch_size, calls):
    class_names = ["cat", ["dog", "puppy"], "car"]  # 3 + 6 + 3 = 12 prompts
    reference = build_zeroshot_weights(FakeTextEncoder(WORDS, TEMPLATES), class_names, TEMPLATES)
    encoder = FakeTextEncoder(WORDS, TEMPLATES)

    weights = build_zeroshot_weights(encoder, class_names, TEMPLATES, batch_size=batch_size)

    assert encoder.batch_sizes == calls
    assert_close(weights, reference, atol=0, rtol=0)


@pytest.mark.data
def test_cifar10_prompts_give_one_column_per_class():
    prompts = shared_data("clip_zeroshot_prompts") / "prompts.json"
    class_names, templates = resolve_prompts(str(prompts), str(prompts), prompts_key="CIFAR10")
    encoder = FakeTextEncoder(class_names, templates)

    weights = build_zeroshot_weights(encoder, class_names, templates, batch_size=64)

    assert sum(encoder.batch_sizes) == 10 * 18
    assert_close(weights[:10], torch.eye(10), atol=1e-6, rtol=0)
    assert_close(weights[10:], torch.zeros(2, 10), atol=1e-6, rtol=0)


@pytest.mark.data
def test_emotion_synonym_prompts_average_their_words():
    prompts = shared_data("clip_zeroshot_prompts") / "prompts.json"
    key = "FacialEmotionRecognition2013"
    class_names, templates = resolve_prompts(str(prompts), str(prompts), prompts_key=key)
    words = [word for synonyms in class_names for word in synonyms]
    encoder = FakeTextEncoder(words, templates)

    weights = build_zeroshot_weights(encoder, class_names, templates)

    assert weights.shape == (len(words) + 2, 7)
    for column, synonyms in enumerate(class_names):
        assert_close(weights[:, column], encoder.word_vector(*synonyms), atol=1e-6, rtol=0)
    assert class_names[5] == ["surprised", "shocked", "spooked"]
