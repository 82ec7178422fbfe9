"""The argparse adapter: temperature resolution and the original flags."""
import argparse

import pytest

from knowledge_distill_util import add_distill_args, resolve_temperatures


@pytest.mark.parametrize("args, expected", [
    (None, (1.0, 1.0)),
    (argparse.Namespace(), (1.0, 1.0)),
    (argparse.Namespace(temperature=None), (1.0, 1.0)),
    (argparse.Namespace(temperature=4), (4.0, 4.0)),
    (argparse.Namespace(temperature=4.0, student_temperature=2.0), (2.0, 4.0)),
    (argparse.Namespace(temperature=4.0, teacher_temperature=8.0, student_temperature=None), (4.0, 8.0)),
    (argparse.Namespace(teacher_temperature=3.0, student_temperature=0.5), (0.5, 3.0)),
])
def test_per_side_temperatures_win_over_the_shared_one(args, expected):
    assert resolve_temperatures(args) == expected


def test_add_distill_args_registers_the_original_flags_and_defaults():
    parser = add_distill_args(argparse.ArgumentParser())
    defaults = vars(parser.parse_args([]))
    assert defaults == {
        "temperature": 1.0, "teacher_temperature": None, "student_temperature": None,
        "kd_alpha": 0.2, "kd_beta": 10.0, "intermediate_distill": False, "pred_distill": False,
    }
    args = parser.parse_args(["--teacher_temperature", "2", "--student_temperature", "3", "--kd_alpha", "0.8",
                              "--kd_beta", "100", "--intermediate_distill", "--pred_distill"])
    assert resolve_temperatures(args) == (3.0, 2.0)
    assert (args.kd_alpha, args.kd_beta, args.intermediate_distill, args.pred_distill) == (0.8, 100.0, True, True)


def test_add_distill_args_returns_the_parser_for_chaining():
    parser = argparse.ArgumentParser()
    assert add_distill_args(parser) is parser
