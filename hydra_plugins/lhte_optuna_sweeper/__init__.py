"""Hydra sweeper that drives Optuna (4.x/5.x) directly with the ask-and-tell API.

``hydra_plugins`` is a namespace package (no ``__init__.py``): Hydra imports every public module
below it at start-up to discover plugins, so the modules here import Optuna lazily.
"""
