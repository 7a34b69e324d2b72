"""The MPA Kubeflow components and pipeline, as one importable package.

In the repository they live at the top level, laid out as Kubeflow's components standard
(KEP-913) lays them out: ``components/<category>/<name>/`` and ``pipelines/<category>/<name>/``.
The wheel maps those two folders into this package (``[tool.setuptools.package-dir]`` in
``pyproject.toml``), so an installed ``mpa`` imports them as ``mpa_kfp.components...`` and
``mpa_kfp.pipelines...``. In a source checkout (``PYTHONPATH=src``, or an editable install that
sees only ``src/``) this module adds the repository root to the package's search path, so the
same import names find the same files.

Nothing here is imported by the ``mpa`` runtime: components call the library, never the reverse.
"""

from pathlib import Path

_here = Path(__file__).resolve().parent
_checkout = _here.parents[1]
if not (_here / "components").is_dir() and (_checkout / "components" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's __path__)
