"""Draw ``docs/img/default_run_summary.png``: the default run's ``summary.png``, from its published table.

The default run (``kdu-compress``, about 10 minutes on 2 CPU cores) writes ``summary.png`` itself; this
script redraws the picture shown in the README from the numbers of its table (README.md, "Results of the
default run"; docs/recipes.md has every column) with the same function, :func:`plot_summary`:

    PYTHONPATH=. python docs/_tools/default_run_summary.py
"""
import os

from knowledge_distill_util.training.summary import summary_rows, write_summary_plot

#: (model, accuracy, parameters, speed-up) of the default run for seed 0 (README.md's table; the teacher
#: inferred 56.6 samples/s in the run of 2026-12-06 on the idle machine, docs/recipes.md has each model's).
DEFAULT_RUN = (
    ("teacher (all-MiniLM-L6-v2, fine-tuned)", 0.7883, 22.71e6, 1.00),
    ("labels-only student", 0.7423, 15.62e6, 2.84),
    ("KD", 0.7526, 15.62e6, 2.87),
    ("labels-only BiLSTM", 0.6403, 13.61e6, 5.91),
    ("Distilled-BiLSTM", 0.6301, 13.61e6, 6.03),
    ("BERT-PKD", 0.7704, 15.62e6, 2.75),
    ("TinyBERT", 0.7628, 15.62e6, 3.02),
    ("TinyBERT (general + augmented)", 0.7551, 15.62e6, 2.80),
    ("BERT-of-Theseus", 0.7628, 15.62e6, 2.90),
    ("labels-only student (hidden 192)", 0.3138, 6.89e6, 9.86),
    ("MiniLM", 0.3214, 6.89e6, 8.84),
    ("DistilBERT", 0.7551, 15.62e6, 2.77),
)
TEACHER_SAMPLES_PER_S = 56.6
TITLE = ("Default run (Fortunes topics, 4 classes, 392 dev quotes; seed 0): dev accuracy against size and "
         "speed; red star: the teacher")


def rows():
    """The default run's summary rows, as ``kdu-compress`` builds them."""
    entries = [{"model": model, "results": {"accuracy": accuracy, "parameters": parameters,
                                            "reasoningTime": speedup * TEACHER_SAMPLES_PER_S}}
               for model, accuracy, parameters, speedup in DEFAULT_RUN]
    return summary_rows(entries, "accuracy", teacher=DEFAULT_RUN[0][0])


def main(out_dir: str = os.path.join(os.path.dirname(__file__), "..", "img")) -> str:
    return write_summary_plot(rows(), os.path.normpath(out_dir), TITLE, name="default_run_summary.png")


if __name__ == "__main__":
    print(main())
