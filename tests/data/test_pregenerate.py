"""TinyBERT's corpus pregeneration (knowledge_distill_util/data/pregenerate.py): the instances' masking,
lengths and pairs (its command line: tests/cli/test_pregenerate.py)."""
import os
import random

import pytest

from knowledge_distill_util.data import default_vocab_file, load_tokenizer
from knowledge_distill_util.data.pregenerate import (PregenerateConfig, TokenizedCorpus, instances_from_document,
                                                     mask_tokens, truncate_pair)


def _split(lines):
    return [line.split() for line in lines]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_vocab_file())


def test_masking_takes_round_of_the_rate_and_never_the_special_tokens():
    tokens = ["[CLS]"] + [f"w{i}" for i in range(37)] + ["[SEP]"] + [f"v{i}" for i in range(20)] + ["[SEP]"]
    original = list(tokens)
    out, positions, labels = mask_tokens(list(tokens), 0.15, 20, False, ["zz"], random.Random(1))
    assert len(positions) == round(len(tokens) * 0.15) == 9
    assert positions == sorted(positions) and labels == [original[i] for i in positions]
    assert not {0, 38, 59} & set(positions)
    assert all(out[i] == original[i] for i in range(len(tokens)) if i not in positions)
    assert all(out[i] in ("[MASK]", original[i], "zz") for i in positions)


def test_masking_is_capped_by_max_predictions_and_masks_one_token_at_rate_zero():
    tokens = ["[CLS]"] + ["w"] * 100 + ["[SEP]", "[SEP]"]
    assert len(mask_tokens(list(tokens), 0.5, 7, False, ["zz"], random.Random(0))[1]) == 7
    assert len(mask_tokens(list(tokens), 0.0, 7, False, ["zz"], random.Random(0))[1]) == 1  # the original's max(1, .)


def test_whole_word_masking_masks_every_piece_of_a_word():
    tokens = ["[CLS]", "un", "##believ", "##able", "cat", "[SEP]", "dog", "[SEP]"]
    for seed in range(20):
        _, positions, _ = mask_tokens(list(tokens), 0.4, 20, True, ["zz"], random.Random(seed))
        assert {1, 2, 3} <= set(positions) or not {1, 2, 3} & set(positions)


def test_masked_tokens_are_mask_80_kept_10_random_10_percent():
    counts = {"mask": 0, "kept": 0, "random": 0}
    rng = random.Random(0)
    for _ in range(2000):
        out, positions, labels = mask_tokens(["[CLS]", "a", "b", "[SEP]"], 0.5, 1, False, ["zz"], rng)
        token = out[positions[0]]
        counts["mask" if token == "[MASK]" else "random" if token == "zz" else "kept"] += 1
    assert abs(counts["mask"] / 2000 - 0.8) < 0.03 and abs(counts["kept"] / 2000 - 0.1) < 0.03


def test_truncation_cuts_the_longer_side_down_to_the_budget():
    a, b = list("abcdefghij"), list("xyz")
    truncate_pair(a, b, 8, random.Random(0))
    assert (len(a), len(b)) == (5, 3)


def test_instances_fit_max_seq_len_with_their_segments(tmp_path, tokenizer, word_corpus):
    cfg = PregenerateConfig(max_seq_len=20, short_seq_prob=0.3, masked_lm_prob=0.15)
    with TokenizedCorpus(word_corpus, lambda lines: _split(lines), str(tmp_path)) as corpus:
        rng = random.Random(0)
        instances = [i for n, doc in enumerate(corpus.documents())
                     for i in instances_from_document(corpus, n, doc, cfg, ["zz"], rng)]
        assert any(name.startswith(".kdu-corpus") for name in os.listdir(tmp_path))  # the on-disk documents
    assert not any(name.startswith(".kdu-corpus") for name in os.listdir(tmp_path))  # removed on exit
    assert {i["is_random_next"] for i in instances} == {True, False}
    for instance in instances:
        tokens, segments = instance["tokens"], instance["segment_ids"]
        first_sep = tokens.index("[SEP]")
        assert 5 <= len(tokens) <= 20 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert segments == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
        assert len(instance["masked_lm_positions"]) == min(20, max(1, round(len(tokens) * 0.15)))


def test_oneseq_never_draws_a_random_next_and_other_documents_follow_sentence_counts(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b\n\nc d\nc e\nc f\n\ng h\n", encoding="utf-8")
    with TokenizedCorpus(str(path), _split, str(tmp_path)) as corpus:
        assert corpus[1] == [["c", "d"], ["c", "e"], ["c", "f"]]  # read back by seeking
        rng = random.Random(0)
        drawn = [corpus.sample_other(0, rng)[0][0] for _ in range(4000)]
        assert "a" not in drawn and abs(drawn.count("c") / 4000 - 0.75) < 0.03  # 3 sentences against 1
        cfg = PregenerateConfig(max_seq_len=64, oneseq=True)
        assert not any(i["is_random_next"] for n, doc in enumerate(corpus.documents())
                       for i in instances_from_document(corpus, n, doc, cfg, ["zz"], rng))
