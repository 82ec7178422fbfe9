"""``scripts/pregenerate_training_data.py`` (knowledge_distill_util/cli/pregenerate.py): the original's files,
deterministic for a seed, and each bad input refused with one sentence and exit 2, nothing written."""
import json
import os

import pytest

from knowledge_distill_util.cli.pregenerate import main


def test_the_script_writes_the_original_files_deterministically(tmp_path, capsys, word_corpus):
    corpus = word_corpus
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
