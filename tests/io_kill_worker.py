"""A process that saves version after version of one directory and may SIGKILL itself at a chosen point,
started by tests/test_io.py.

    python io_kill_worker.py MODE TARGET KILL_AT KILL_VERSION

MODE ``dir``: :func:`replace_directory` with a plain-Python ``fill`` writing the files of :data:`FILES`,
each holding the version number (``_replace_dir.py`` is loaded from its file, so no OneFlow import: fast).
MODE ``model``: :func:`save_model` of a small LSTM student whose parameters all equal the version.

Versions 1, 2, 3, ... are saved in turn; after each save returns, ``saved <version>`` is printed.
At version ``KILL_VERSION`` the process kills itself (SIGKILL) at ``KILL_AT``:

- ``fill``: in the middle of writing the new content (``dir``: after half of the files; ``model``: after
  ``model.safetensors`` was written into the temporary directory, before that directory is renamed);
- ``before-swap``: the new content is complete, nothing renamed yet;
- ``after-exchange``: right after the ``renameat2`` swap (the old content is in the temporary directory);
- ``fallback-window``: ``renameat2`` disabled; between renaming the old directory aside and renaming the
  new one in (the fallback's documented window);
- ``fallback-after``: ``renameat2`` disabled; after both renames, before the old copy is deleted;
- ``none``: never; the parent kills the process at a random moment.
"""
import importlib.util
import os
import shutil
import signal
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = [f"part-{i}" for i in range(8)]
LINE = "{}\n"


def kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def load_replace_dir():
    """``_replace_dir.py`` (and the base modules it imports) as ``kdu_io._replace_dir``, without the package's
    ``__init__``."""
    package = types.ModuleType("kdu_io")
    package.__path__ = [os.path.join(ROOT, "knowledge_distill_util")]
    sys.modules["kdu_io"] = package
    spec = importlib.util.spec_from_file_location("kdu_io._replace_dir",
                                                  os.path.join(ROOT, "knowledge_distill_util", "_replace_dir.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["kdu_io._replace_dir"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    mode, target, kill_at, kill_version = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    state = {"version": 0}

    def armed(point: str) -> bool:
        return kill_at == point and state["version"] == kill_version

    if mode == "dir":
        io = load_replace_dir()

        def fill(directory: str) -> None:
            for i, name in enumerate(FILES):
                if i == len(FILES) // 2 and armed("fill"):
                    kill()
                with open(os.path.join(directory, name), "w") as handle:
                    handle.write(LINE.format(state["version"]) * 4096)

        def save() -> None:
            io.replace_directory(target, fill)
    else:
        os.environ.setdefault("GLOG_minloglevel", "3")
        sys.path.insert(0, ROOT)
        import oneflow as flow

        from knowledge_distill_util import _replace_dir as io
        from knowledge_distill_util.models import LSTMStudentForSequenceClassification, init, save_model

        model = LSTMStudentForSequenceClassification(vocab_size=50, hidden_size=8, intermediate_size=6,
                                                     embedding_size=5)
        real_fill = init._fill_weights

        def fill_weights(directory, data):
            real_fill(directory, data)
            if armed("fill"):
                kill()

        init._fill_weights = fill_weights

        def save() -> None:
            with flow.no_grad():
                for parameter in model.parameters():
                    parameter.fill_(float(state["version"]))
            save_model(model, target)

    real_swap, real_exchange, real_rename, real_rmtree = io._swap_in, io._exchange, os.rename, shutil.rmtree

    def swap(staging, path):
        if armed("before-swap"):
            kill()
        return real_swap(staging, path)

    def exchange(a, b):
        done = real_exchange(a, b)
        if armed("after-exchange"):
            kill()
        return done

    def rename(src, dst):
        real_rename(src, dst)
        if armed("fallback-window") and ".kdu-old-" in os.path.basename(dst):
            kill()

    def rmtree(path, *args, **kwargs):
        if armed("fallback-after") and ".kdu-old-" in os.path.basename(path):
            kill()
        return real_rmtree(path, *args, **kwargs)

    io._swap_in, io._exchange, io.os.rename, io.shutil.rmtree = swap, exchange, rename, rmtree
    if kill_at.startswith("fallback"):
        io._exchange = lambda a, b: False
    for version in range(1, 100000):
        state["version"] = version
        save()
        print(f"saved {version}", flush=True)


if __name__ == "__main__":
    main()
