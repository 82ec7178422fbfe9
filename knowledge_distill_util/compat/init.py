"""The original's student initialisation scripts on OneFlow snapshots.

- ``bert-pkd_generate_student_model.py --teacher_model T --student_model S --layer_list=2,6,10``: ``S`` holds
  every non-layer variable of ``T`` as ``student-<name>`` and teacher layer ``layer_list[j]`` as student
  layer ``j`` (``student-bert-encoder-layer_<j>-...``): the BERT-PKD student's start.
- ``theseus/init_stu.py --teacher_model T --student_model S --layer_list="0,1,2"``: ``S`` holds every
  variable of ``T`` unchanged plus each teacher layer ``i`` of ``layer_list`` as successor layer ``i``
  (``bert-encoder-student-layer_<i>-...``, named by the teacher's index as the original names them: its
  renaming pattern never matches the ``student-layer`` name it builds): the BERT-of-Theseus model's start.
  A Theseus run reads successor layers ``0..n-1``, so only a list ``0,1,...,n-1`` (the shipped scripts')
  gives it a complete successor; another list is written as the original writes it, with a warning.

Adam slots (``-m``/``-v``) are not copied, as in the original. The variable folders (``out`` and
``meta``) are copied unchanged; ``snapshot_done`` marks the result complete.
"""
import argparse
import logging
import os
import re
import shutil
import sys
from typing import List, Optional, Sequence

from .._io import replace_directory, write_error_message
from ..models.snapshot import list_snapshot_variables

__all__ = ["parse_layer_list", "generate_student_snapshot", "main"]

logger = logging.getLogger(__name__)
_LAYER = re.compile(r"bert-encoder-layer_(\d+)-")
_SLOT = re.compile(r".*-(m|v)$")


def parse_layer_list(text: str) -> List[int]:
    """``"2,6,10"`` (quotes and spaces allowed, as ``--layer_list="0,1,2"`` leaves them) -> ``[2, 6, 10]``.

    >>> parse_layer_list('"0, 1,2"')
    [0, 1, 2]
    """
    parts = [p.strip() for p in str(text).strip().strip("'\"").split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise ValueError(f"--layer_list must be comma-separated teacher layer indices such as 2,6,10, got {text!r}")
    layers = [int(p) for p in parts]
    if len(set(layers)) != len(layers):
        raise ValueError(f"--layer_list {text!r} names a layer twice; each student layer copies a different one")
    return layers


def generate_student_snapshot(teacher_model: str, student_model: str, layer_list: Sequence[int],
                              style: str = "bert-pkd") -> str:
    """Write the student snapshot ``student_model`` from ``teacher_model`` (see the module doc); ``style``
    ``"bert-pkd"`` or ``"theseus"``. Raises ``ValueError`` naming the problem (not a snapshot, a layer the
    teacher does not have, a student directory holding other files). Returns the student directory."""
    if style not in ("bert-pkd", "theseus"):
        raise ValueError(f"style must be 'bert-pkd' or 'theseus', got {style!r}")
    variables = {n: f for n, f in list_snapshot_variables(teacher_model).items() if not _SLOT.fullmatch(n)}
    depth = 1 + max((int(m.group(1)) for m in map(_LAYER.search, variables) if m), default=-1)
    wrong = [i for i in layer_list if not 0 <= i < depth]
    if depth == 0 or wrong:
        raise ValueError(f"--layer_list {list(layer_list)} names layer(s) {wrong} but teacher snapshot {teacher_model} "
                         f"has {depth} encoder layers (0..{depth - 1}); pass indices of its layers")
    if os.path.isdir(student_model) and os.listdir(student_model):
        try:
            list_snapshot_variables(student_model)
        except ValueError:
            raise ValueError(f"--student_model {student_model} holds other files than a snapshot; it is replaced "
                             f"as a whole: pass a new or empty directory") from None
    copies = []
    for name, folder in variables.items():
        match = _LAYER.search(name)
        if style == "theseus":
            copies.append((folder, name))
            if match and int(match.group(1)) in layer_list:  # the teacher's index, as the original
                copies.append((folder, _LAYER.sub(f"bert-encoder-student-layer_{match.group(1)}-", name, count=1)))
        elif not match:
            copies.append((folder, "student-" + name))
        elif int(match.group(1)) in layer_list:
            j = list(layer_list).index(int(match.group(1)))
            copies.append((folder, "student-" + _LAYER.sub(f"bert-encoder-layer_{j}-", name, count=1)))

    def fill(staging: str) -> None:
        for folder, name in copies:
            _copy_tree(folder, os.path.join(staging, name))
        open(os.path.join(staging, "snapshot_done"), "w").close()

    if style == "theseus" and list(layer_list) != list(range(len(layer_list))):
        logger.warning("--layer_list %s: the successor layers are named by the teacher's index "
                       "(bert-encoder-student-layer_%s), as the original's init_stu.py names them; a Theseus run reads "
                       "successor layers 0..n-1, so pass 0,1,...,n-1 to start a complete successor",
                       list(layer_list), "/_".join(str(i) for i in layer_list))
    path = replace_directory(student_model, fill)
    logger.info("wrote %d variables to %s (teacher layers %s)", len(copies), path, list(layer_list))
    return path


def _copy_tree(source: str, target: str) -> None:
    """Copy the files under ``source`` to ``target`` as new files and folders: they get the umask's
    permissions (``shutil.copytree`` would copy the teacher's modes, e.g. 0o600)."""
    for folder, _, files in os.walk(source):
        destination = os.path.join(target, os.path.relpath(folder, source))
        os.makedirs(destination, exist_ok=True)
        for name in sorted(files):
            shutil.copyfile(os.path.join(folder, name), os.path.join(destination, name))


def main(style: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``--teacher_model --student_model --layer_list`` (the original's flags and default ``2,6,10``)."""
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher_model", default=None, help="the teacher's snapshot directory")
    parser.add_argument("--student_model", default=None, help="the student snapshot directory to write")
    parser.add_argument("--layer_list", default="2,6,10", help="teacher layers copied, comma-separated")
    parser.add_argument("--print_config", action="store_true", help="print the resolved flags and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(format="[%(name)s] %(message)s", level=logging.INFO, force=True)
    try:
        layers = parse_layer_list(args.layer_list)
        if args.print_config:
            print(f"teacher_model: {args.teacher_model}\nstudent_model: {args.student_model}\nlayer_list: {layers}")
            return 0
        if not args.teacher_model or not args.student_model:
            raise ValueError("pass --teacher_model (a snapshot directory) and --student_model (the one to write)")
        generate_student_snapshot(args.teacher_model, args.student_model, layers, style)
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except OSError as error:  # a full disk, a read-only folder: one sentence, the old snapshot intact
        print(f"error: {write_error_message(error)}", file=sys.stderr, flush=True)
        return 2
    return 0
