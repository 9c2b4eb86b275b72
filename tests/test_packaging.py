"""The plugin's default yamls (``properties/``) reach users who install a built package, not only a checkout."""
import ast
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPOSITORY
from rporec_recbole import config
from rporec_recbole.config import find_properties_dir, plugin_yamls


def test_properties_are_looked_up_inside_the_package_first_then_beside_it(tmp_path):
    package = tmp_path / "rporec_recbole"
    package.mkdir()
    assert find_properties_dir(str(package)) == str(tmp_path / "properties")  # a source checkout
    (package / "properties").mkdir()
    assert find_properties_dir(str(package)) == str(tmp_path / "properties")  # a stray empty folder is not a copy
    (package / "properties" / "RPORec.yaml").write_text("epochs: 1\n")
    assert find_properties_dir(str(package)) == str(package / "properties")  # a wheel's copy


def test_a_plugin_model_without_its_yaml_is_an_error_not_recbole_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "PROPERTIES_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="installed without its properties/ folder"):
        plugin_yamls("RPORec", "ml-100k")
    assert plugin_yamls("SASRec", "ml-100k") == []  # RecBole's models have no plugin yaml of their own


def test_a_built_package_carries_the_default_yamls_and_reads_them(tmp_path):
    """Regression: ``pip install .`` left ``properties/`` out, so an installed RPORec had none of its defaults."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(os.path.join(REPOSITORY, "setup.py"), source)
    for folder in ("rporec_recbole", "properties"):
        shutil.copytree(os.path.join(REPOSITORY, folder), source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    build = tmp_path / "build"
    # build_py lays out exactly the files a wheel of this pure-Python package holds
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(build)], cwd=source, check=True,
                   capture_output=True)

    probe = "import rporec_recbole.config as c; print(c.plugin_yamls('RPORec', 'ml-100k'))"
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(build)},
                           check=True, capture_output=True, text=True).stdout
    installed = build / "rporec_recbole" / "properties"
    assert ast.literal_eval(found.strip().splitlines()[-1]) == [str(installed / "RPORec.yaml"),
                                                                 str(installed / "dataset" / "ml-100k.yaml")]
