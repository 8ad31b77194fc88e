"""Mistakes a new user makes in a study file end in one error naming the key and the fix:
a section given twice (YAML would silently keep the second) and an output_dir that would
write results into the code, the raw data or outside the project."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from seglab.config import ConfigError, load_config, read_yaml, validate
from tests.helpers import snakemake_cmd, tiny_study, workflow_env, write_yaml

TWO_VARIANT_BLOCKS = """\
study: {name: twice, output_dir: results/twice}
variants:
  unet-bce: {}
  unet-dice: {loss: {name: dice}}
defaults:
  train: {epochs: 2}
variants:
  unet-base32: {model: {base: 32}}
"""


def test_a_section_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(TWO_VARIANT_BLOCKS)
    assert list(yaml.safe_load(TWO_VARIANT_BLOCKS)["variants"]) == ["unet-base32"]  # what plain YAML does
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: key 'variants' is given twice (lines 2 and 7)")
    assert "Merge the two into one 'variants:' block." in message


def test_a_nested_key_given_twice_is_named_by_its_dotted_path(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("variants:\n  a:\n    model: {base: 8}\n    loss: {name: dice}\n    model: {base: 4}\n")
    with pytest.raises(ConfigError, match=r"key 'variants\.a\.model' is given twice \(lines 3 and 5\)"):
        read_yaml(path)


def test_snakemake_refuses_a_study_file_with_a_section_twice(tmp_path):
    """Snakemake parses --configfile itself with plain YAML; the workflow still refuses the file."""
    path = tmp_path / "twice.yaml"
    path.write_text(TWO_VARIANT_BLOCKS)
    done = subprocess.run(snakemake_cmd(tmp_path, path, "-n"), cwd=tmp_path, env=workflow_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "key 'variants' is given twice (lines 2 and 7)" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("output_dir", "says"), [
    ("src/seglab", "is inside 'src/'"),
    ("./workflow/out", "is inside 'workflow/'"),
    ("data/raw/lesions", "is inside 'data/raw/'"),
    ("configs/studies", "is inside 'configs/'"),
    ("results/../src", "is inside 'src/'"),
    (".", "is the project folder itself"),
    ("../elsewhere", "is outside the project"),
    ("/tmp/results", "is absolute"),
])
def test_output_dir_inside_code_raw_data_or_outside_the_project_is_refused(output_dir, says):
    raw = tiny_study(output_dir)
    with pytest.raises(ConfigError) as err:
        validate(raw, source="study.yaml")
    message = str(err.value)
    assert message.startswith("study.yaml: key 'study.output_dir':") and says in message
    assert "Use a folder of its own inside the project, e.g. results/studies/<study name>." in message


@pytest.mark.parametrize("output_dir", ["results", "results/studies/unet-ablation", "data/prepared-runs", "out"])
def test_ordinary_output_dirs_are_accepted(output_dir):
    assert validate(tiny_study(output_dir))["study"]["output_dir"] == output_dir


def test_snakemake_refuses_output_dir_in_the_package(tmp_path):
    path = write_yaml(tmp_path / "study.yaml", tiny_study("src/seglab"))
    done = subprocess.run(snakemake_cmd(tmp_path, path, "-n"), cwd=tmp_path, env=workflow_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "key 'study.output_dir': 'src/seglab' is inside 'src/'" in done.stdout + done.stderr
    assert not (tmp_path / "src").exists()


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path):
    """`<<: *anchor` then a key of the anchor is an override, not a key given twice."""
    path = tmp_path / "study.yaml"
    path.write_text("defaults:\n  model: &m {name: unet, base: 8, depth: 2}\n"
                    "variants:\n  a: {}\n  b:\n    model: {<<: *m, base: 16}\n")
    assert load_config(path)["variants"]["b"]["model"]["base"] == 16
