"""TinyBERT's corpus pregeneration (knowledge_distill_util/data/pregenerate.py) and its command line
(scripts/pregenerate_training_data.py -> cli/pregenerate.py): the instances' masking, lengths and
pairs, determinism, the original's files, and each bad input refused with one sentence and exit 2."""
import json
import os
import random

import pytest

from knowledge_distill_util.data import default_vocab_file, load_tokenizer
from knowledge_distill_util.data.pregenerate import (PregenerateConfig, TokenizedCorpus, instances_from_document,
                                                     mask_tokens, truncate_pair)
from knowledge_distill_util.cli.pregenerate import main

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def _corpus(path, documents=6, sentences=5, words=7, seed=0):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(documents):
            for _ in range(sentences):
                out.write(" ".join(rng.choice(WORDS) for _ in range(words)) + " .\n")
            out.write("\n")
    return str(path)


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


def test_instances_fit_max_seq_len_with_their_segments(tmp_path, tokenizer):
    cfg = PregenerateConfig(max_seq_len=20, short_seq_prob=0.3, masked_lm_prob=0.15)
    with TokenizedCorpus(_corpus(tmp_path / "c.txt"), lambda lines: _split(lines), str(tmp_path)) as corpus:
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


def test_the_script_writes_the_original_files_deterministically(tmp_path, capsys):
    corpus = _corpus(tmp_path / "c.txt")
    args = ["--train_corpus", corpus, "--do_lower_case", "--epochs_to_generate", "2", "--max_seq_len", "24",
            "--masked_lm_prob", "0.15"]
    assert main(args + ["--output_dir", str(tmp_path / "a")]) == 0
    assert main(args + ["--output_dir", str(tmp_path / "b"), "--num_workers", "2"]) == 0
    assert main(args + ["--output_dir", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert sorted(os.listdir(tmp_path / "a")) == ["epoch_0.json", "epoch_0_metrics.json", "epoch_1.json",
                                                  "epoch_1_metrics.json"]
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "epoch_0.json").read_bytes() != (tmp_path / "c" / "epoch_0.json").read_bytes()
    assert (tmp_path / "a" / "epoch_0.json").read_bytes() != (tmp_path / "a" / "epoch_1.json").read_bytes()
    lines = (tmp_path / "a" / "epoch_0.json").read_text().splitlines()
    assert set(json.loads(lines[0])) == {"tokens", "segment_ids", "is_random_next", "masked_lm_positions",
                                         "masked_lm_labels"}
    metrics = json.loads((tmp_path / "a" / "epoch_0_metrics.json").read_text())
    assert metrics == {"num_training_examples": len(lines), "max_seq_len": 24}
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["instances_per_second"] > 0
    assert main(args + ["--output_dir", str(tmp_path / "a")]) == 2  # epochs present: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("text, flags, message", [
    ("", [], r"holds no text"),
    ("\n\n\n", [], r"holds no text \(3 blank line\(s\)\)"),
    ("one sentence .\nanother one .\n", [], r"has no document breaks \(one document of 2 line\(s\)\)"),
    ("one .\n\ntwo .\n\nthree .\n", [], r"has no sentence breaks: each of its 3 documents is a single line"),
    ("a .\nb .\n\nc .\n", ["--vocab_file", "/nonexistent/vocab.txt"], r"vocabulary file /nonexistent/vocab.txt "
                                                                      r"does not exist"),
    ("a .\nb .\n\nc .\n", ["--max_seq_len", "4"], r"--max_seq_len must be an integer >= 5"),
    ("a .\nb .\n\nc .\n", ["--masked_lm_prob", "1.5"], r"--masked_lm_prob must be a probability in \[0, 1\], got 1.5"),
])
def test_bad_input_is_one_sentence_and_exit_2_with_nothing_written(tmp_path, capsys, text, flags, message):
    import re

    corpus = tmp_path / "c.txt"
    corpus.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--train_corpus", str(corpus), "--output_dir", str(out), *flags]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[")]  # log lines aside
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert not out.exists()


def test_a_missing_corpus_is_refused(tmp_path, capsys):
    assert main(["--train_corpus", str(tmp_path / "none.txt"), "--output_dir", str(tmp_path / "out")]) == 2
    assert "--train_corpus" in capsys.readouterr().err and not (tmp_path / "out").exists()
