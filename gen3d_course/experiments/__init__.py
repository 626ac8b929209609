"""The course's experiments with each model family, one module per family named as in ``models``:
baselines, probes and evaluations the lectures measure, and the shipped checkpoint's recipe.

A module that ships weights defines the same four names: ``CHECKPOINT`` (the file's name),
``HELDOUT_SEED`` (the first seed of the shapes or views never trained on), ``load_pretrained(device=None)``
(the trained model, in eval mode, on ``device``) and ``train_checkpoint() -> dict`` (the recipe;
``gen3d-course train NAME`` runs it in the current run mode and it saves with
``checkpoints.save_checkpoint``).
"""
