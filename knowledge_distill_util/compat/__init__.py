"""The original toolkit (yejinlei/Dubhe ``model_compress/model_compress/distil``): every piece of it this
package speaks, kept apart from the recipes that run it.

- :mod:`.flags`: its scripts' flags (``task_*.py``, ``run_classifier.py``) mapped onto a
  :class:`~knowledge_distill_util.config.schema.TrainConfig`; the entry point of those script names is
  :mod:`knowledge_distill_util.cli.original`.
- :mod:`.data`: its OFRecord parts as a run's data (``--train_data_dir``, ``--aug_train``).
- :mod:`.models`: its OneFlow snapshots in a run (teachers and students read from them, ``snapshot_best``,
  ``snapshot_last_snapshot``) and its results files' figures.
- :mod:`.results`: ``results_<desc>.json`` as it writes them; :mod:`.log`: its ``summary.csv`` and progress line.
- :mod:`.init`: its student initialisation scripts (``bert-pkd_generate_student_model.py``, ``init_stu.py``).

Import layers (``tests/test_layers.py``): the training recipes import this package; it imports the models,
the engine, the data and the configuration schema (:mod:`knowledge_distill_util.config.schema`), never a
recipe; the command-line entry points (:mod:`knowledge_distill_util.cli`) sit above both.
"""
