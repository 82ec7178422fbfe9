"""The original toolkit's OFRecord data: parts written by hand in its layout, the writer, the GLUE converter,
and every bad input's message.

The hand-written parts follow yejinlei/Dubhe ``src/glue_ofrecord/glue_process.py``
(``file_based_convert_examples_to_features``): ``struct.pack("q", size)`` then the serialised
``OFRecord`` with ``int32_list`` features, one file ``train.of_record-0``.
"""
import logging
import os
import struct

import numpy as np
import pytest

import oneflow.core.record.record_pb2 as of_record

from knowledge_distill_util.data import Features, convert_examples, default_vocab_file, load_tokenizer, read_examples
from knowledge_distill_util.data.ofrecord import (
    EVAL_PREFIX,
    TRAIN_PREFIX,
    glue_to_ofrecord,
    read_ofrecord_features,
    scan_ofrecord_parts,
    write_ofrecord_parts,
)


def original_record(ids, mask, segments, label, names=("input_ids", "input_mask", "segment_ids", "label_ids",
                                                         "is_real_example")):
    """One record exactly as glue_process.py builds it."""
    values = {"input_ids": ids, "input_mask": mask, "segment_ids": segments, "label_ids": [label],
              "is_real_example": [1]}
    sample = of_record.OFRecord(feature={
        name: of_record.Feature(int32_list=of_record.Int32List(value=[int(v) for v in values[name]]))
        for name in names})
    return struct.pack("q", sample.ByteSize()) + sample.SerializeToString()


def random_rows(rng, n, length, vocab=30522):
    lengths = rng.integers(2, length + 1, size=n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, vocab, size=(n, length)) * mask
    segments = ((np.arange(length)[None, :] >= (lengths[:, None] // 2)) * mask).astype(np.int64)
    labels = rng.integers(0, 3, size=n)
    return ids, mask, segments, labels


def write_original_parts(directory, prefix, blocks, names=None):
    os.makedirs(directory, exist_ok=True)
    for part, (ids, mask, segments, labels) in enumerate(blocks):
        with open(os.path.join(directory, f"{prefix}{part}"), "ab") as writer:  # the original appends ('ab')
            for row in range(len(labels)):
                kwargs = {} if names is None else {"names": names}
                writer.write(original_record(ids[row], mask[row], segments[row], labels[row], **kwargs))


def parse_parts(paths):
    """Independent reader of the framing, for checking the writer."""
    records = []
    for path in paths:
        data = open(path, "rb").read()
        offset = 0
        while offset < len(data):
            (size,) = struct.unpack_from("<q", data, offset)
            record = of_record.OFRecord()
            record.ParseFromString(data[offset + 8:offset + 8 + size])
            records.append(record)
            offset += 8 + size
        assert offset == len(data)
    return records


# ------------------------------------------------------------------------------------ original layout


def test_one_original_part_reads_back_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    ids, mask, segments, labels = random_rows(rng, 37, 16)
    write_original_parts(str(tmp_path / "train"), TRAIN_PREFIX, [(ids, mask, segments, labels)])
    got = read_ofrecord_features(str(tmp_path / "train"), TRAIN_PREFIX, part_num=1)
    np.testing.assert_array_equal(got.input_ids, ids)
    np.testing.assert_array_equal(got.input_mask, mask)
    np.testing.assert_array_equal(got.segment_ids, segments)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.input_ids.dtype == np.int64 and got.labels.dtype == np.int64


@pytest.mark.parametrize("chunk_size", [4, 5, 100])
def test_several_parts_chunks_and_example_num(tmp_path, chunk_size):
    rng = np.random.default_rng(1)
    blocks = [random_rows(rng, n, 8) for n in (5, 3, 6)]
    write_original_parts(str(tmp_path), "part-", blocks)
    whole = [np.concatenate([b[k] for b in blocks]) for k in range(4)]
    got = read_ofrecord_features(str(tmp_path), "part-", part_num=3, chunk_size=chunk_size)
    np.testing.assert_array_equal(got.input_ids, whole[0])
    np.testing.assert_array_equal(got.labels, whole[3])
    capped = read_ofrecord_features(str(tmp_path), "part-", part_num=3, example_num=9, chunk_size=chunk_size)
    np.testing.assert_array_equal(capped.input_ids, whole[0][:9])
    first_two = read_ofrecord_features(str(tmp_path), "part-", part_num=2, chunk_size=chunk_size)
    np.testing.assert_array_equal(first_two.segment_ids, whole[2][:8])


def test_zero_padded_part_names_and_lstm_layout(tmp_path):
    """OneFlow's part-00000 names; the BiLSTM's data (word ids, segment_ids all 1, glue_process_lstm.py)."""
    rng = np.random.default_rng(2)
    ids, mask, _, labels = random_rows(rng, 6, 32, vocab=10002)
    segments = np.ones_like(ids)
    directory = tmp_path / "SST-2_lstm_32" / "train"
    directory.mkdir(parents=True)
    with open(directory / "part-00000", "wb") as handle:
        for row in range(6):
            handle.write(original_record(ids[row], mask[row], segments[row], labels[row]))
    got = read_ofrecord_features(str(directory), "part-", seq_length=32)
    np.testing.assert_array_equal(got.input_ids, ids)
    np.testing.assert_array_equal(got.segment_ids, segments)


def test_example_num_above_the_data_reads_all_and_warns(tmp_path, caplog):
    rng = np.random.default_rng(3)
    write_original_parts(str(tmp_path), EVAL_PREFIX, [random_rows(rng, 4, 6)])
    with caplog.at_level(logging.WARNING):
        got = read_ofrecord_features(str(tmp_path), EVAL_PREFIX, example_num=88614)
    assert len(got) == 4
    assert "example_num=88614" in caplog.text and "hold 4 records" in caplog.text


# ----------------------------------------------------------------------------------------- the writer


def test_writer_layout_is_the_originals(tmp_path):
    rng = np.random.default_rng(4)
    ids, mask, segments, labels = random_rows(rng, 7, 10)
    features = Features(ids, mask, segments, labels)
    write_ofrecord_parts(features, str(tmp_path / "out"), part_num=3, prefix=TRAIN_PREFIX)
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == [f"{TRAIN_PREFIX}{i}" for i in range(3)]
    per_part = [len(parse_parts([str(tmp_path / "out" / n)])) for n in names]
    assert per_part == [2, 2, 3]  # consecutive blocks [7*i//3, 7*(i+1)//3)
    records = parse_parts([str(tmp_path / "out" / n) for n in names])
    for row, record in enumerate(records):
        assert set(record.feature) == {"input_ids", "input_mask", "segment_ids", "label_ids", "is_real_example"}
        for name in record.feature:
            assert record.feature[name].WhichOneof("kind") == "int32_list"
        assert list(record.feature["input_ids"].int32_list.value) == ids[row].tolist()
        assert list(record.feature["input_mask"].int32_list.value) == mask[row].tolist()
        assert list(record.feature["segment_ids"].int32_list.value) == segments[row].tolist()
        assert list(record.feature["label_ids"].int32_list.value) == [labels[row]]
        assert list(record.feature["is_real_example"].int32_list.value) == [1]


def test_writer_replaces_an_earlier_output(tmp_path):
    rng = np.random.default_rng(5)
    big = Features(*random_rows(rng, 6, 4))
    small = Features(*random_rows(rng, 2, 4))
    write_ofrecord_parts(big, str(tmp_path / "d"), part_num=3)
    write_ofrecord_parts(small, str(tmp_path / "d"), part_num=1)
    assert os.listdir(tmp_path / "d") == ["part-0"]
    np.testing.assert_array_equal(read_ofrecord_features(str(tmp_path / "d")).input_ids, small.input_ids)


# ------------------------------------------------------------------------------------------ converter


SST = ["sentence\tlabel", "a gripping , funny film\t1", "dull and long\t0", "the best of the year !\t1",
       "not worth the ticket , really not\t0", "fine\t1"]
MRPC = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tthe cat sat on the mat\ta cat was on a mat",
        "0\t3\t4\tstocks fell sharply today\tthe weather was sunny and warm all week long", "1\t5\t6\tyes\tno"]


def write_tsv(directory, name, lines):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def _glue_to_ofrecord_script():
    """scripts/glue_to_ofrecord.py as a module."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "glue_to_ofrecord.py")
    spec = importlib.util.spec_from_file_location("glue_to_ofrecord_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("task,lines", [("SST-2", SST), ("MRPC", MRPC)])
def test_tsv_to_ofrecord_round_trip(tmp_path, task, lines):
    glue = str(tmp_path / "glue" / task)
    write_tsv(glue, "train.tsv", lines)
    write_tsv(glue, "dev.tsv", lines[:1] + lines[2:])
    out = str(tmp_path / "glue_ofrecord" / task)
    written = glue_to_ofrecord(glue, task, out, default_vocab_file(), seq_length=12, part_num=2)
    assert written == {"train": len(lines) - 1, "eval": len(lines) - 2}
    assert sorted(os.listdir(out)) == ["eval", "train"]
    assert sorted(os.listdir(os.path.join(out, "train"))) == ["train.of_record-0", "train.of_record-1"]
    tokenizer = load_tokenizer(default_vocab_file())
    for split, tsv, prefix in (("train", "train", TRAIN_PREFIX), ("eval", "dev", EVAL_PREFIX)):
        expected = convert_examples(read_examples(glue, task, tsv), tokenizer, 12, task)
        got = read_ofrecord_features(os.path.join(out, split), prefix, part_num=2, seq_length=12)
        for key in ("input_ids", "input_mask", "segment_ids", "labels"):
            np.testing.assert_array_equal(getattr(got, key), getattr(expected, key))


def test_script_converts_with_the_original_flags(tmp_path):
    script = _glue_to_ofrecord_script()
    glue = str(tmp_path / "SST-2")
    write_tsv(glue, "train.tsv", SST)
    write_tsv(glue, "dev.tsv", SST[:3])
    out = str(tmp_path / "of" / "SST-2")
    code = script.main(["--data_dir", glue, "--output_dir", out, "--vocab_file", default_vocab_file(),
                        "--do_lower_case", "True", "--max_seq_length", "16", "--do_train", "True",
                        "--do_eval", "True", "--task=SST-2"])
    assert code == 0
    assert len(read_ofrecord_features(os.path.join(out, "eval"), EVAL_PREFIX)) == 2
    assert script.main(["--data_dir", glue, "--output_dir", out, "--task_name", "sts-b", "--do_train"]) == 2
    assert script.main(["--data_dir", glue, "--output_dir", out]) == 2



@pytest.mark.parametrize("where", ["output_dir", "output_dir/train"])
def test_script_refuses_an_output_dir_that_is_a_file_and_leaves_it(tmp_path, capsys, where):
    """issue 16: ``--output_dir`` naming an existing file gave a traceback."""
    script = _glue_to_ofrecord_script()
    glue = str(tmp_path / "SST-2")
    write_tsv(glue, "train.tsv", SST)
    out = tmp_path / "out"
    if where == "output_dir":
        out.write_text("keep me")
        planted = out
    else:
        out.mkdir()
        planted = out / "train"
        planted.write_text("keep me")
    code = script.main(["--data_dir", glue, "--output_dir", str(out), "--vocab_file", default_vocab_file(),
                        "--do_train", "--task_name", "SST-2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err == (f"error: output directory {planted} exists and is not a directory; pass another --output_dir or "
                   f"move that file away (it is left as it is)")
    assert planted.read_text() == "keep me"


# -------------------------------------------------------------------------------------- bad inputs


def test_missing_directory_and_file_instead_of_directory(tmp_path):
    with pytest.raises(ValueError, match=r"nothere does not exist; pass the directory holding the parts"):
        read_ofrecord_features(str(tmp_path / "nothere"))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValueError, match=r"file is not a directory"):
        read_ofrecord_features(str(tmp_path / "file"))


def test_no_part_with_the_prefix_names_what_is_there(tmp_path):
    write_original_parts(str(tmp_path), TRAIN_PREFIX, [random_rows(np.random.default_rng(6), 2, 4)])
    with pytest.raises(ValueError, match=r"holds no part part-0 .* it holds 'train.of_record-' \(1 part\(s\)\); "
                                         r"pass the matching prefix"):
        read_ofrecord_features(str(tmp_path), "part-")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no part eval.of_record-0 .* it holds no part files"):
        scan_ofrecord_parts(str(tmp_path / "empty"), EVAL_PREFIX)


def test_fewer_parts_than_part_num(tmp_path):
    rng = np.random.default_rng(7)
    write_original_parts(str(tmp_path), "part-", [random_rows(rng, 2, 4), random_rows(rng, 2, 4)])
    with pytest.raises(ValueError, match=r"holds 2 part\(s\) named part-<number> but part_num is 4: missing "
                                         r"part-2, part-3; pass --\*_data_part_num=2"):
        read_ofrecord_features(str(tmp_path), "part-", part_num=4)


@pytest.mark.parametrize("missing", ["input_ids", "input_mask", "segment_ids", "label_ids"])
def test_missing_feature(tmp_path, missing):
    names = tuple(n for n in ("input_ids", "input_mask", "segment_ids", "label_ids") if n != missing)
    write_original_parts(str(tmp_path), "part-", [random_rows(np.random.default_rng(8), 2, 4)], names=names)
    with pytest.raises(ValueError, match=rf"record 0 of .*part-0 has no feature '{missing}' .* convert the data "
                                         rf"again with scripts/glue_to_ofrecord.py"):
        read_ofrecord_features(str(tmp_path))


def test_wrong_lengths(tmp_path):
    rng = np.random.default_rng(9)
    write_original_parts(str(tmp_path / "a"), "part-", [random_rows(rng, 2, 4), random_rows(rng, 1, 5)])
    with pytest.raises(ValueError, match=r"feature 'input_ids' of record 0 of .*part-1 has 5 values, expected "
                                         r"seq_length=4"):
        read_ofrecord_features(str(tmp_path / "a"), part_num=2)
    with pytest.raises(ValueError, match=r"has 4 values, expected seq_length=128; pass the --seq_length"):
        read_ofrecord_features(str(tmp_path / "a"), seq_length=128)
    os.makedirs(tmp_path / "b")
    with open(tmp_path / "b" / "part-0", "wb") as handle:
        handle.write(original_record([1, 2], [1, 1], [0, 0], 1))
        sample = of_record.OFRecord(feature={n: of_record.Feature(int32_list=of_record.Int32List(value=v))
                                             for n, v in (("input_ids", [1, 2]), ("input_mask", [1, 1]),
                                                          ("segment_ids", [0, 0]), ("label_ids", [0, 1]))})
        handle.write(struct.pack("q", sample.ByteSize()) + sample.SerializeToString())
    with pytest.raises(ValueError, match=r"'label_ids' of record 1 of .*part-0 has 2 values, expected 1"):
        read_ofrecord_features(str(tmp_path / "b"))


def test_truncated_and_foreign_files(tmp_path):
    data = original_record([1, 2, 3], [1, 1, 1], [0, 0, 0], 1)
    for name, content, pattern in (
        ("cut", data + data[:-3], r"record 1 of .*part-0 claims \d+ bytes at byte \d+ but the file has"),
        ("short", data + data[:5], r"ends inside the 8-byte size of record 1"),
        ("garbage", struct.pack("q", 4) + b"\xff\xff\xff\xff", r"record 0 of .*part-0 is not an OFRecord message"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part-0").write_bytes(content)
        with pytest.raises(ValueError, match=pattern):
            read_ofrecord_features(str(tmp_path / name))
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "part-0").write_bytes(b"")
    with pytest.raises(ValueError, match=r"hold no record; convert the data again"):
        read_ofrecord_features(str(tmp_path / "nothing"))


def test_int64_feature_is_refused(tmp_path):
    sample = of_record.OFRecord(feature={
        "input_ids": of_record.Feature(int64_list=of_record.Int64List(value=[1, 2])),
        "input_mask": of_record.Feature(int32_list=of_record.Int32List(value=[1, 1])),
        "segment_ids": of_record.Feature(int32_list=of_record.Int32List(value=[0, 0])),
        "label_ids": of_record.Feature(int32_list=of_record.Int32List(value=[0]))})
    (tmp_path / "part-0").write_bytes(struct.pack("q", sample.ByteSize()) + sample.SerializeToString())
    with pytest.raises(ValueError, match=r"feature 'input_ids' of record 0 of .* is a int64_list, expected an "
                                         r"int32_list"):
        read_ofrecord_features(str(tmp_path))


def test_bad_arguments(tmp_path):
    write_original_parts(str(tmp_path), "part-", [random_rows(np.random.default_rng(10), 2, 4)])
    with pytest.raises(ValueError, match=r"example_num must be a positive integer or None, got 0 \(--\*_example_num"):
        read_ofrecord_features(str(tmp_path), example_num=0)
    with pytest.raises(ValueError, match=r"part_num must be a positive integer, got 0 \(--\*_data_part_num"):
        read_ofrecord_features(str(tmp_path), part_num=0)
    with pytest.raises(ValueError, match=r"prefix must be a non-empty file-name prefix"):
        read_ofrecord_features(str(tmp_path), prefix="")
    with pytest.raises(TypeError, match=r"directory must be a path"):
        read_ofrecord_features(3)


def test_writer_refusals(tmp_path):
    rng = np.random.default_rng(11)
    features = Features(*random_rows(rng, 3, 4))
    with pytest.raises(ValueError, match=r"part_num=4 is more than the 3 rows .* pass part_num <= 3"):
        write_ofrecord_parts(features, str(tmp_path / "x"), part_num=4)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds other files than OFRecord parts \(notes.txt\); .* choose a new "
                                         r"or empty directory"):
        write_ofrecord_parts(features, str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    scores = Features(features.input_ids, features.input_mask, features.segment_ids,
                      np.array([0.5, 1.0, 4.2], dtype=np.float32))
    with pytest.raises(ValueError, match=r"features.labels must hold integers .* regression scores"):
        write_ofrecord_parts(scores, str(tmp_path / "y"))
    with pytest.raises(TypeError, match=r"features must be a Features"):
        write_ofrecord_parts({"input_ids": 1}, str(tmp_path / "z"))


def test_converter_refusals(tmp_path):
    with pytest.raises(ValueError, match=r"task 'sts-b' is a regression task; the original OFRecord layout"):
        glue_to_ofrecord(str(tmp_path), "STS-B", str(tmp_path / "o"), default_vocab_file())
    with pytest.raises(ValueError, match=r"GLUE data directory .*missing does not exist"):
        glue_to_ofrecord(str(tmp_path / "missing"), "SST-2", str(tmp_path / "o"), default_vocab_file())
    with pytest.raises(ValueError, match=r"splits must be a non-empty subset of \('train', 'eval', 'train_aug'\)"):
        glue_to_ofrecord(str(tmp_path), "SST-2", str(tmp_path / "o"), default_vocab_file(), splits=("dev",))


READER = """
import json, sys
from knowledge_distill_util.data.ofrecord import read_ofrecord_features
import oneflow as flow
f = read_ofrecord_features(sys.argv[1], part_num=int(sys.argv[2]), seq_length=6)
with open(sys.argv[3] + str(flow.env.get_rank()), "w") as out:
    json.dump({"ids": f.input_ids.tolist(), "labels": f.labels.tolist()}, out)
"""


@pytest.mark.parametrize("part_num", [1, 3])
def test_every_process_of_a_launched_job_reads_every_row(tmp_path, part_num):
    """Under OneFlow's launcher each rank reads all the parts (the data-parallel trainer shards the rows
    itself); OneFlow's reader alone would split the parts among the ranks, and abort with fewer parts."""
    import json
    import socket
    import subprocess
    import sys

    rng = np.random.default_rng(part_num)
    rows = Features(rng.integers(1, 40, (7, 6)), np.ones((7, 6), np.int64), np.zeros((7, 6), np.int64),
                    np.arange(7) % 2)
    write_ofrecord_parts(rows, tmp_path / "parts", part_num=part_num)
    script = tmp_path / "reader.py"
    script.write_text(READER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2", "--master_port",
                           str(port), str(script), str(tmp_path / "parts"), str(part_num), str(tmp_path / "rank")],
                          capture_output=True, text=True, timeout=180, env=dict(os.environ, GLOG_minloglevel="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}").read_text())
        assert seen == {"ids": rows.input_ids.tolist(), "labels": rows.labels.tolist()}, rank


# ------------------------------------------------------------------------------------ labels (issue 16)


def _four_rows(labels):
    ids = np.array([[101, 7, 102, 0]] * len(labels))
    return ids, (ids > 0).astype(np.int64), np.zeros_like(ids), np.asarray(labels)


def test_a_label_beyond_the_classes_names_the_part_and_record(tmp_path):
    """label 9 with 4 classes would train with zero loss and zero gradient for its row."""
    write_original_parts(tmp_path, TRAIN_PREFIX, [_four_rows([0, 1, 2]), _four_rows([3, 0, 9, 9])])
    with pytest.raises(ValueError, match=r"^record 2 of .*train\.of_record-1 has label_ids 9, outside the 4 classes of "
                                         r"the task \(0 \.\. 3; 2 such record\(s\) in all\); pass the right "
                                         r"--task_name or convert the data again with scripts/glue_to_ofrecord\.py$"):
        read_ofrecord_features(tmp_path, TRAIN_PREFIX, part_num=2, num_labels=4)
    kept = read_ofrecord_features(tmp_path, TRAIN_PREFIX, part_num=2, example_num=5, num_labels=4)  # rows read only
    assert kept.labels.tolist() == [0, 1, 2, 3, 0]
    assert read_ofrecord_features(tmp_path, TRAIN_PREFIX, part_num=2).labels.tolist()[-1] == 9  # no task: unchecked


def test_a_negative_dev_label_is_refused_for_the_task(tmp_path):
    """label -1 in the dev set would add a phantom class to the metrics."""
    from knowledge_distill_util.data.loading import load_ofrecord_task_data

    write_original_parts(tmp_path / "train", TRAIN_PREFIX, [_four_rows([0, 1, 1])])
    write_original_parts(tmp_path / "eval", EVAL_PREFIX, [_four_rows([1, -1, 0])])
    with pytest.raises(ValueError, match=r"^record 1 of .*eval\.of_record-0 has label_ids -1, outside the 2 classes of "
                                         r"the task \(0 \.\. 1; 1 such record\(s\) in all\)"):
        load_ofrecord_task_data("SST-2", 4, train_dir=str(tmp_path / "train"), eval_dir=str(tmp_path / "eval"))


def test_regression_labels_are_not_class_ids(tmp_path):
    from knowledge_distill_util.data.loading import load_ofrecord_task_data

    write_original_parts(tmp_path / "eval", EVAL_PREFIX, [_four_rows([5, 0, 3])])
    data = load_ofrecord_task_data("STS-B", 4, eval_dir=str(tmp_path / "eval"))
    assert data.dev.labels.tolist() == [5, 0, 3]


def test_a_bad_label_on_the_command_line_is_one_sentence_and_leaves_no_file(tmp_path):
    import subprocess
    import sys

    write_original_parts(tmp_path / "train", TRAIN_PREFIX, [_four_rows([0, 1, 9, 1, 0, 1, 0, 1])])
    write_original_parts(tmp_path / "eval", EVAL_PREFIX, [_four_rows([0, 1])])
    done = subprocess.run(
        [sys.executable, "-m", "knowledge_distill_util", "train", "--recipe", "teacher", "--quick", "--task_name",
         "SST-2", "--seq_length", "4", "--train_data_dir", str(tmp_path / "train"), "--eval_data_dir",
         str(tmp_path / "eval"), "--teacher_model", "scratch", "--teacher_num_hidden_layers", "1",
         "--teacher_hidden_size", "8", "--teacher_num_attention_heads", "2", "--teacher_intermediate_size", "8",
         "--model_save_dir", str(tmp_path / "m"), "--result_dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=180, env=dict(os.environ, GLOG_minloglevel="3"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "error: record 2 of " in done.stderr and "has label_ids 9, outside the 2 classes" in done.stderr
    assert not os.path.exists(tmp_path / "m" / "run_config.json")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_parts_get_the_umask_permissions(tmp_path, umask):
    rng = np.random.default_rng(0)
    old = os.umask(umask)
    try:
        write_ofrecord_parts(Features(*random_rows(rng, 4, 5)), tmp_path / "train", part_num=2)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "train").st_mode & 0o777 == 0o777 & ~umask
    for name in os.listdir(tmp_path / "train"):
        assert os.stat(tmp_path / "train" / name).st_mode & 0o777 == 0o666 & ~umask, name
