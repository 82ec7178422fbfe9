"""The command-line entry points, thin: each parses its command line and hands the run to the package.

- :mod:`.main`: ``python -m knowledge_distill_util {train,compress,convert-checkpoint}`` and the console
  scripts ``kdu-train`` (:func:`.train.main`) and ``kdu-compress``
  (:func:`.compress.main`).
- :mod:`.compress`: ``kdu-compress``'s command line (jsonargparse, as ``kdu-train``'s) and exit statuses; the run is
  :mod:`knowledge_distill_util.training.compression`.
- :mod:`.train`: ``kdu-train``'s entry point, its exit statuses, and OneFlow's launcher for ``--nproc`` and the
  original ``--gpu_num_per_node``; the run is :mod:`knowledge_distill_util.training.run`.
- :mod:`.original`: the original toolkit's script names (``scripts/task_*.py``, ``scripts/run_classifier.py``;
  their flags are :mod:`knowledge_distill_util.compat.flags`).
- :mod:`.pregenerate`: ``scripts/pregenerate_training_data.py`` (masked-LM instances for ``tinybert_general``
  and ``distilbert_mlm``).

Import layers (``tests/test_layers.py``): this package is the top one; nothing in the package imports it but
``knowledge_distill_util.__main__``.
"""
