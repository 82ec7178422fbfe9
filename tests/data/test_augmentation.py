"""TinyBERT's data augmentation on a tiny WordPiece vocabulary: GloVe streaming and its bad lines, the
masked-LM inputs (checked token by token), the random draws, train_aug.tsv's layout and determinism, and the
script's one-sentence refusals."""
import json
import logging
import os
import random

import numpy as np
import oneflow as flow
import pytest
from safetensors.numpy import save_file

from knowledge_distill_util.data import augmentation as aug
from knowledge_distill_util.data.features import load_tokenizer
from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.models.pretrained import hf_arrays, hf_config

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "great", "film", "plot",
         "fun", "dull", "un", "##believ", "##able", "story", "a", "very", ".", ",", "awful", "nice", "##s"]
ID = {token: i for i, token in enumerate(VOCAB)}
TRAIN = ["sentence\tlabel", "the movie was good .\t1", "an unbelievable plot\t0", "Dull films, awful story\t0",
         "the\t1"]


def write_vocab(directory):
    path = directory / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return str(path)


def write_task(directory, rows=TRAIN):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.tsv").write_text("\n".join(rows) + "\n")
    (directory / "dev.tsv").write_text("\n".join(rows[:3]) + "\n")
    return directory


class FakeMaskedLM:
    """Logits favouring 'great' > 'nice' > '##s' > '[UNK]' > 'fun' at every mask; records the inputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, ids, mask, segments, positions):
        self.calls.append((ids.copy(), mask.copy(), segments.copy(), positions.copy()))
        logits = np.zeros((len(ids), len(VOCAB)), np.float32)
        for rank, token in enumerate(["great", "nice", "##s", "[UNK]", "fun"]):
            logits[:, ID[token]] = 10 - rank
        return logits


def _augmentor(tokenizer, masked_lm=None, glove=None, M=4, seed=0):
    table = np.random.default_rng(seed).standard_normal((len(VOCAB), 6)).astype(np.float32)
    return aug.Augmentor(tokenizer, masked_lm, glove, M, substitute=aug.embedding_neighbours(table, VOCAB),
                         table=table, batch_size=2, max_length=64)


@pytest.fixture()
def tokenizer(tmp_path):
    return load_tokenizer(write_vocab(tmp_path))


# ---------------------------------------------------------------------------------------------- GloVe


def test_glove_streams_only_the_task_words_and_finds_neighbours(tmp_path, caplog):
    path = tmp_path / "glove.txt"
    path.write_text("the 1 0 0\nunbelievable 1 1 0\nincredible 0.9 1 0\nimplausible 1 0.8 0.1\n"
                    "far away 5 5 5\nbanana 0 0 1\n")
    with caplog.at_level(logging.INFO):
        vectors = aug.read_glove(str(path), {"unbelievable", "incredible", "implausible", "banana", "absent"})
    assert vectors.words == ["unbelievable", "incredible", "implausible", "banana"]
    assert "read 6 lines (dimension 3); found 4 of the task's 5 candidate words" in caplog.text
    # cosines to (1, 1, 0)/sqrt2: incredible 0.9986, implausible 0.9899, banana 0
    assert vectors.neighbours("unbelievable", 2) == ["incredible", "implausible"]
    assert vectors.neighbours("absent", 2) == []
    np.testing.assert_allclose(np.linalg.norm(vectors.unit, axis=1), 1.0, rtol=1e-6)
    assert aug.read_glove(str(path), {"banana"}, max_words=3).words == []  # only the first 3 lines read


@pytest.mark.parametrize("text, message", [
    ("a 1 2\nb 1\n", r"glove.txt, line 2: 1 values but line 1 has 2; .* fix or remove line 2"),
    ("a 1 2\nb 3 4\nunbelievable 1 x\n", r"glove.txt, line 3: the vector of 'unbelievable' holds a value that is not "
                                         r"a finite number"),
    ("unbelievable 1 nan\n", r"line 1: the vector of 'unbelievable' holds a value that is not a finite number"),
    ("400000 300\nthe 1 2\n", r"line 1: 1 value\(s\) after the word; .*remove a word2vec 'count dim' header line"),
    ("", r"glove.txt is empty"),
])
def test_glove_bad_lines_name_the_line(tmp_path, text, message):
    path = tmp_path / "glove.txt"
    path.write_text(text)
    with pytest.raises(aug.AugmentationError, match=message):
        aug.read_glove(str(path), {"unbelievable"})


def test_bad_value_of_another_word_is_not_parsed(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("a 1 2\nother x y\n")  # values are parsed for the task's words only (the file is GBs)
    assert aug.read_glove(str(path), {"a"}).words == ["a"]


# ------------------------------------------------------------------------------------------- candidates


def test_masked_lm_inputs_and_candidates(tokenizer):
    fake = FakeMaskedLM()
    glove = aug.WordVectors(["unbelievable", "incredible"], np.eye(2, dtype=np.float32))
    sentences = _augmentor(tokenizer, fake, glove, M=5).plan(["The movie was good.", "an unbelievable plot"])
    first = sentences[0]
    assert first.words == ["the", "movie", "was", "good", "."]
    # movie and good are single pieces: the top M=5 tokens of the masked LM, without ## pieces and [UNK]; the
    # stop words are skipped
    assert first.candidates == {1: ["great", "nice", "fun"], 3: ["great", "nice", "fun"]}
    assert _augmentor(tokenizer, fake, glove, M=4).plan(["a good plot"])[0].candidates[1] == ["great", "nice"]
    rows = [tuple(array[i] for array in call) for call in fake.calls for i in range(len(call[0]))]
    c = ID
    movie = [c["[CLS]"], c["the"], c["[MASK]"], c["was"], c["good"], c["."], c["[SEP]"], c["the"], c["movie"],
             c["was"], c["good"], c["."], c["[SEP]"]]
    ids, mask, segments, position = next(r for r in rows if r[3] == 2 and r[0][1] == c["the"])
    assert ids[:13].tolist() == movie and mask.sum() == 13 and ids[13:].tolist() == [c["[PAD]"]] * (len(ids) - 13)
    assert segments[:13].tolist() == [0] * 7 + [1] * 6
    # "an": a stop word; "unbelievable" (un ##believ ##able): GloVe; "plot": masked LM
    second = sentences[1]
    assert second.candidates[1] == ["incredible"]
    assert second.candidates[2] == ["great", "nice", "fun"]


def test_substitute_without_glove_or_head(tokenizer):
    sentences = _augmentor(tokenizer).plan(["an unbelievable plot"])
    candidates = sentences[0].candidates
    assert set(candidates) == {1, 2}  # "an" is a stop word
    for found in candidates.values():
        assert found and all(w in VOCAB and w.isalpha() and w.islower() for w in found)
    assert "plot" not in candidates[2]  # the word itself is excluded


def test_draws_follow_the_original():
    sentence = aug._Sentence("The cat sat", ["the", "cat", "sat"], {1: ["dog", "fox"], 2: ["stood"]})
    got = aug.augment_sentence(sentence, 5, 0.4, random.Random(7))
    rng, want = random.Random(7), ["The cat sat"]
    for _ in range(5):  # the original's loop: choice, then random() < p, per candidate word in order
        words = ["the", "cat", "sat"]
        for index, cands in ((1, ["dog", "fox"]), (2, ["stood"])):
            choice = rng.choice(cands)
            if rng.random() < 0.4:
                words[index] = choice
        if " ".join(words) not in want:
            want.append(" ".join(words))
    assert got == want
    assert aug.augment_sentence(sentence, 5, 0.0, random.Random(0)) == ["The cat sat", "the cat sat"]
    assert aug.augment_sentence(sentence, 3, 1.0, random.Random(0))[1].endswith("stood")


# -------------------------------------------------------------------------------------------- the file


def test_train_aug_tsv_layout_and_determinism(tmp_path, tokenizer):
    task = write_task(tmp_path / "SST-2")
    stats = aug.augment_task(str(task), "SST-2", _augmentor(tokenizer, FakeMaskedLM()), copies=4, seed=3)
    text = (task / "train_aug.tsv").read_bytes()
    lines = text.decode().splitlines()
    assert lines[0] == "sentence\tlabel" and lines.count("sentence\tlabel") == 1
    assert all(len(line.split("\t")) == 2 for line in lines)
    assert lines[1] == "the movie was good .\t1"  # each row: its original line first, then its copies
    assert stats["rows"] == 4 and stats["written"] == len(lines) and len(lines) <= 1 + 4 * 5
    block = lines[1:lines.index("an unbelievable plot\t0")]  # row 1 and its copies (movie, good: masked LM, M=4)
    assert 2 <= len(block) <= 5 and len(set(block)) == len(block)
    for line in block[1:]:
        words, label = line.split("\t")
        assert label == "1"
        the, movie, was, good, stop = words.split(" ")
        assert (the, was, stop) == ("the", "was", ".") and movie in ("movie", "great", "nice") \
            and good in ("good", "great", "nice"), line
    assert lines[-1] == "the\t1" and lines.count("the\t1") == 1  # no candidate word: only the row itself
    with pytest.raises(aug.AugmentationError, match=r"train_aug.tsv exists; pass --overwrite"):
        aug.augment_task(str(task), "SST-2", _augmentor(tokenizer, FakeMaskedLM()), copies=4, seed=3)
    aug.augment_task(str(task), "SST-2", _augmentor(tokenizer, FakeMaskedLM()), copies=4, seed=3, chunk_rows=1,
                     overwrite=True)
    assert (task / "train_aug.tsv").read_bytes() == text  # same seed, same file, whatever the chunking
    aug.augment_task(str(task), "SST-2", _augmentor(tokenizer, FakeMaskedLM()), copies=4, seed=4, overwrite=True)
    assert (task / "train_aug.tsv").read_bytes() != text
    assert [n for n in os.listdir(task) if n not in ("train.tsv", "dev.tsv", "train_aug.tsv")] == []


def test_pair_task_augments_each_column_and_keeps_the_other(tmp_path, tokenizer):
    rows = ["index\tsentence1\tsentence2\tlabel", "0\tthe movie was good\tthe plot was dull\tentailment"]
    task = write_task(tmp_path / "RTE", rows)
    aug.augment_task(str(task), "RTE", _augmentor(tokenizer, FakeMaskedLM()), copies=3, p=1.0)
    lines = [l.split("\t") for l in (task / "train_aug.tsv").read_text().splitlines()[1:]]
    original = rows[1].split("\t")
    assert lines[0] == original and lines.count(original) == 2  # each column's block starts with the row itself
    second = lines.index(original, 1)
    assert second >= 2 and len(lines) - second >= 2
    assert all(l[2] == original[2] for l in lines[:second]) and all(l[1] == original[1] for l in lines[second:])
    assert all(l[0] == "0" and l[3] == "entailment" for l in lines)


# ------------------------------------------------------------------------------------------- the script


def _hf_dir(directory, vocab, head_vocab=None):
    """A tiny Hugging Face BERT directory with a masked-LM head of ``head_vocab`` entries (None: no head)."""
    flow.manual_seed(0)
    encoder = BertForSequenceClassification(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=16, max_position_embeddings=64)
    arrays = {k: v for k, v in hf_arrays(encoder).items() if not k.startswith("classifier.")}
    if head_vocab:
        rng = np.random.default_rng(0)
        arrays.update({"cls.predictions.transform.dense.weight": rng.standard_normal((8, 8)).astype(np.float32),
                       "cls.predictions.transform.dense.bias": np.zeros(8, np.float32),
                       "cls.predictions.transform.LayerNorm.weight": np.ones(8, np.float32),
                       "cls.predictions.transform.LayerNorm.bias": np.zeros(8, np.float32),
                       "cls.predictions.bias": np.zeros(head_vocab, np.float32)})
    directory.mkdir()
    save_file(arrays, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(encoder, head=False)))
    return str(directory)


def _script():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "data_augmentation.py")
    spec = importlib.util.spec_from_file_location("data_augmentation_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_runs_the_masked_lm_and_refuses_bad_input(tmp_path, capsys):
    script = _script()
    vocab = write_vocab(tmp_path)
    glue = tmp_path / "glue"
    write_task(glue / "SST-2")
    model = _hf_dir(tmp_path / "bert", len(VOCAB), len(VOCAB))
    base = [f"--model_load_dir={model}", f"--vocab_file={vocab}", "--do_lower_case", f"--glue_dir={glue}",
            "--gpu_num_per_node=1", "--seq_length=64", "--N", "3"]
    assert script.main(base + ["--task_name", "SST-2"]) == 0
    assert (glue / "SST-2" / "train_aug.tsv").read_text().startswith("sentence\tlabel\nthe movie was good .\t1\n")
    cases = [
        (base + ["--task_name", "CoLA"], r"task directory .*glue has no train.tsv; pass --glue_dir"),
        ([f"--model_load_dir={_hf_dir(tmp_path / 'big', len(VOCAB) + 2, len(VOCAB) + 2)}", f"--vocab_file={vocab}",
          f"--glue_dir={glue}", "--task_name=SST-2", "--overwrite"],
         rf"--vocab_file .*vocab.txt has {len(VOCAB)} tokens but the model in .*big has {len(VOCAB) + 2} word "
         rf"embeddings; pass the vocab.txt the model was trained with"),
        ([f"--model_load_dir={_hf_dir(tmp_path / 'odd', len(VOCAB), len(VOCAB) - 1)}", f"--vocab_file={vocab}",
          f"--glue_dir={glue}", "--task_name=SST-2", "--overwrite"],
         rf"the masked-LM head of .* has {len(VOCAB) - 1} output entries but the model's vocabulary has {len(VOCAB)}"),
        (base + ["--task_name=SST-2", "--overwrite", f"--glove_embs={tmp_path / 'none.txt'}"],
         r"GloVe file .*none.txt does not exist"),
        (base + ["--task_name=SST-2", "--p=1.5"], r"--p=1.5 must be a probability in \[0, 1\]"),
        (base + ["--task_name=SST-2", "--overwrite", "--device=tpu"], r"--device: .*tpu"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert script.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("data_augmentation.py: error: "), err
        import re
        assert re.search(message, err), (message, err)


def test_mask_past_max_length_keeps_the_word(tokenizer):
    """With a masked LM and GloVe (no substitute), a [MASK] beyond --seq_length leaves the word as its candidate."""
    fake = FakeMaskedLM()
    augmentor = aug.Augmentor(tokenizer, fake, aug.WordVectors([], np.zeros((0, 2), np.float32)), M=5, max_length=4)
    sentence = augmentor.plan(["the movie was good ."])[0]
    assert sentence.candidates == {1: ["great", "nice", "fun"], 3: ["good"]}
    assert max(len(call[0][0]) for call in fake.calls) == 4  # the input is cut at max_length tokens


def test_the_original_run_data_augmentation_sh_line_parses():
    """Every flag of the original's run_data_augmentation.sh (yejinlei/Dubhe examples/tinybert)."""
    args = _script().build_parser().parse_args([
        "--model_load_dir=../../models/uncased_L-12_H-768_A-12_oneflow", "--model_save_dir=./snapshots",
        "--vocab_file", "../../src/glue_ofrecord/vocab.txt", "--do_lower_case", "--glove_embs",
        "../../glove/glove.840B.300d.txt", "--glue_dir", "../../data/glue_data", "--task_name", "SST-2",
        "--log_dir=./log", "--save_last_snapshot=True", "--gpu_num_per_node=1", "--seq_length=512",
        "--num_hidden_layers=12", "--num_attention_heads=12", "--max_position_embeddings=512", "--type_vocab_size=2",
        "--vocab_size=30522", "--attention_probs_dropout_prob=0.1", "--hidden_dropout_prob=0.1",
        "--hidden_size_per_head=64"])
    assert (args.do_lower_case, args.task_name, args.seq_length, args.num_attention_heads) == (True, "SST-2", 512, 12)
    assert (args.N, args.M, args.p) == (None, 15, 0.4) and aug.default_copies("SST-2") == 20


def test_script_without_head_or_glove_uses_the_substitute(tmp_path, caplog):
    vocab = write_vocab(tmp_path)
    write_task(tmp_path / "glue" / "SST-2")
    with caplog.at_level(logging.INFO):
        assert _script().main([f"--model_load_dir={_hf_dir(tmp_path / 'bert', len(VOCAB))}", f"--vocab_file={vocab}",
                               f"--glue_dir={tmp_path / 'glue'}", "--task_name=SST-2", "--N=2", "--seed=1"]) == 0
    assert "has no masked-LM head (no cls.predictions.bias)" in caplog.text
    assert ("no GloVe file (--glove_embs) and no masked-LM head: candidates come from the nearest neighbours in the "
            "model's word-piece embedding table instead") in caplog.text
    assert (tmp_path / "glue" / "SST-2" / "train_aug.tsv").read_text().startswith("sentence\tlabel\n")


def test_script_streams_glove_for_the_task_words(tmp_path, caplog):
    vocab = write_vocab(tmp_path)
    task = write_task(tmp_path / "glue" / "SST-2")
    glove = tmp_path / "glove.txt"
    glove.write_text("unbelievable 1 1 0\nincredible 0.9 1 0\nfilms 1 0 0\nzebra 0 0 1\n")
    with caplog.at_level(logging.INFO):
        assert _script().main([f"--model_load_dir={_hf_dir(tmp_path / 'bert', len(VOCAB), len(VOCAB))}",
                               f"--vocab_file={vocab}", f"--glue_dir={tmp_path / 'glue'}", "--task_name=SST-2",
                               f"--glove_embs={glove}", "--N=4", "--p=1"]) == 0
    # candidate words of train.tsv: movie good unbelievable plot dull films awful story
    assert "read 4 lines (dimension 3); found 2 of the task's 8 candidate words" in caplog.text
    assert "nearest neighbours in the model's word-piece embedding table" not in caplog.text
    lines = (task / "train_aug.tsv").read_text().splitlines()
    # the pool is the task words GloVe holds (unbelievable, films): unbelievable -> films at p=1
    assert any(line.startswith("an films ") for line in lines)
