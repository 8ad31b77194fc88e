"""seglab: reproducible 2D image-segmentation studies.

The library is importable and testable on its own; Snakemake (``Snakefile``) runs it
through the ``seglab`` command line, DVC versions its files and MLflow records its runs
(only :mod:`seglab.tracking` imports mlflow).
"""

__version__ = "0.1.0"
