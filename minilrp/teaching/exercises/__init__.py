"""The course exercises: one module per exercise (its checks, the right outputs from minilrp's
reference path, the typical mistakes and their hints, what the student's process may use),
the skeletons handed out (``skeletons/``) and the committed worked-by-hand checks (``*.npz``).

An exercise module defines TITLE, FUNCTIONS (what the student writes), SUMMARY, POLICY (what
the student's process may import: see teaching/sandbox.py), HINTS (one per named mistake),
USUAL_CAUSES, ``committed(book)`` (the checks saved in ``<name>.npz``) and ``fresh(book,
rng)`` (random checks drawn at check time; ``rng(case id)`` gives a seeded Generator).
"""
import importlib

EXERCISES = ("epsilon_dense", "alphabeta_dense", "conv_relevance", "zbox", "maxpool_wta", "sa", "aopc")


def definition(name):
    """The module of exercise ``name``; KeyError for an unknown one."""
    if name not in EXERCISES:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
