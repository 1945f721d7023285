"""The CLIP tokenizers shipped in resources/ tokenize exactly like the real ones."""

import pytest
from transformers import CLIPTokenizer

from desktop.engine.paths import MODEL_CONFIGS

ASTRONAUT = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]


@pytest.mark.parametrize(
    ("folder", "pad_id"),
    [
        ("sd15/tokenizer", 49407),
        ("sd2/tokenizer", 0),
        ("sdxl/tokenizer", 49407),
        ("sdxl/tokenizer_2", 0),
    ],
)
def test_shipped_tokenizers(folder, pad_id):
    tokenizer = CLIPTokenizer.from_pretrained(MODEL_CONFIGS / folder)
    assert tokenizer("a photo of an astronaut riding a horse").input_ids == ASTRONAUT
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token_id == pad_id
    padded = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[3:5] == [49407, pad_id]
