"""TSV line endings, paths of the wrong kind, and the shared number validators in the data package
(issue 9: "CR-only line endings", "train.tsv being a directory")."""
import csv
import io
import json
import os

import pytest

from knowledge_distill_util.data import prepare_default_data, read_examples, write_examples

ROWS = [("sentence", "label"), ("a good film", "1"), ("a bad film", "0"), ("fine \u00e9t\u00e9 film", "1")]


def reference_rows(data: bytes):
    """What the reference GLUE processors read: csv.reader, tab-delimited, no quoting, text mode."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=None)
    return [tuple(line) for line in csv.reader(text, delimiter="\t", quotechar=None) if line]


def write_bytes(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as handle:
        handle.write(data)


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n", "mixed"])
@pytest.mark.parametrize("bom", [False, True])
def test_line_endings_read_as_the_reference_processors_do(tmp_path, ending, bom):
    endings = ["\r", "\r\n", "\n", "\r"] if ending == "mixed" else [ending] * len(ROWS)
    text = "".join("\t".join(row) + end for row, end in zip(ROWS, endings))
    data = ("\ufeff" if bom else "").encode() + text.encode("utf-8")
    write_bytes(tmp_path, "train.tsv", data)
    got = [(e.text_a, e.label) for e in read_examples(str(tmp_path), "sst-2", "train")]
    assert got == reference_rows(data)[1:] == ROWS[1:]


def test_cr_only_file_without_final_line_end_and_blank_lines(tmp_path):
    write_bytes(tmp_path, "train.tsv", b"sentence\tlabel\r\ra good film\t1\r\r\ra bad film\t0")
    assert [(e.text_a, e.label) for e in read_examples(str(tmp_path), "sst-2", "train")] == \
        [("a good film", "1"), ("a bad film", "0")]


def test_cr_only_errors_report_the_right_line(tmp_path):
    write_bytes(tmp_path, "train.tsv", b"sentence\tlabel\ra good film\t1\ra bad film\t7\r")
    with pytest.raises(ValueError, match=r"train\.tsv, line 3: unknown label '7'"):
        read_examples(str(tmp_path), "sst-2", "train")


def test_a_tsv_path_that_is_a_directory(tmp_path):
    os.makedirs(tmp_path / "train.tsv")
    with pytest.raises(IsADirectoryError, match=r"train\.tsv is a directory, expected a TSV file; put the 'train' "
                                                r"split of task 'sst-2' there as a tab-separated text file"):
        read_examples(str(tmp_path), "sst-2", "train")


def test_a_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=r"data directory '.*data' is a file, expected a directory; pass "
                                                 r"--data_dir pointing at the folder that holds train\.tsv"):
        read_examples(str(tmp_path / "data"), "sst-2", "train")


def test_write_examples_replaces_atomically_and_round_trips(tmp_path):
    path = str(tmp_path / "train.tsv")
    write_examples(path, [("old\ttext", "0")])
    write_examples(path, [("a\ngood film", "1"), ("bad", "0")])
    assert open(path, "rb").read() == b"sentence\tlabel\na good film\t1\nbad\t0\n"
    assert os.listdir(tmp_path) == ["train.tsv"]
    assert [(e.text_a, e.label) for e in read_examples(str(tmp_path), "sst-2", "train")] == [("a good film", "1"),
                                                                                          ("bad", "0")]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"max_train": 0}, ValueError, r"max_train must be a positive integer or None, got 0"),
    ({"max_dev": "9"}, TypeError, r"max_dev must be a positive integer or None, got '9' \(str\)"),
    ({"max_per_class": None}, TypeError, r"max_per_class must be a positive integer, got None"),
    ({"max_per_class": 2.5}, TypeError, r"max_per_class must be a positive integer, got 2\.5 \(float\)"),
])
def test_prepare_default_data_number_checks(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        prepare_default_data(str(tmp_path), source="synthetic", **kwargs)
    assert not os.listdir(tmp_path)  # checked before anything is written


def test_prepare_default_data_writes_valid_json_and_nothing_else(tmp_path):
    prepare_default_data(str(tmp_path), source="synthetic", max_per_class=20)
    assert sorted(os.listdir(tmp_path)) == ["data_info.json", "dev.tsv", "train.tsv"]
    with open(tmp_path / "data_info.json") as handle:
        assert json.load(handle)["task_name"] == "synthetic"
