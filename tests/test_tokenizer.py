"""The official tokenizer set-up on the stand-in sentencepiece model of the parity data (tiny.spm)."""

from __future__ import annotations

import shutil

import pytest
import sentencepiece
from official import TOKENIZER_MODEL

from mpgsam2.tokenizer import TokenizerError, load_tokenizer


def fairseq_ids(spm_path, text):
    """Reference mapping: <s>=0, </s>=2, <unk>=3, every other piece = its sentencepiece id + 1."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    return [0] + [i + 1 if i else 3 for i in processor.encode(text)] + [2]


@pytest.mark.parametrize(
    "text",
    [
        "the red square on the left",
        "The Yellow Ball",
        "a  cup   on the right",
        "über-großer Hund",
        "狗 and 猫",
        "x",
    ],
)
def test_ids_follow_the_fairseq_mapping_raw_text(tokenizer, text):
    assert tokenizer.encode(text).input_ids.tolist() == fairseq_ids(TOKENIZER_MODEL, text)


def test_official_conventions(tokenizer):
    assert tokenizer.pad_id == 3  # pad is unk, not XLM-R's 1
    assert "[SEG]" in tokenizer.tokenizer.get_vocab()
    lower, upper = tokenizer.encode("the ball"), tokenizer.encode("The Ball")
    assert lower.input_ids.tolist() != upper.input_ids.tolist()  # no lower-casing at inference
    # Characters outside the vocabulary become <unk> = the pad id, and are masked like padding.
    unknown = tokenizer.encode("the 🎉 ball")
    assert 3 in unknown.input_ids.tolist()
    assert unknown.padding.tolist() == [i == 3 for i in unknown.input_ids.tolist()]
    assert not unknown.unknown_only


def test_expression_of_unknown_tokens_only_is_flagged(tokenizer):
    encoded = tokenizer.encode("🎉🎉 ☃")
    assert encoded.unknown_only and encoded.known_tokens == 0
    assert 3 in encoded.input_ids.tolist()


def test_long_expressions_are_cut_and_flagged(tokenizer):
    long_text = "the dog " * 800
    encoded = tokenizer.encode(long_text)
    assert encoded.truncated and len(encoded.input_ids) == tokenizer.max_tokens == 1022
    assert encoded.input_ids[0] == 0 and encoded.input_ids[-1] == 2


def test_loads_from_a_checkpoint_folder(tmp_path):
    shutil.copyfile(TOKENIZER_MODEL, tmp_path / "sentencepiece.bpe.model")
    assert len(load_tokenizer(tmp_path)) == len(load_tokenizer(TOKENIZER_MODEL))


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(TokenizerError, match="No sentencepiece model"):
        load_tokenizer(tmp_path)
    (tmp_path / "beit3.spm").write_bytes(b"not a model")
    with pytest.raises(TokenizerError):
        load_tokenizer(tmp_path / "beit3.spm")
