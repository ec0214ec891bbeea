"""scripts/setup_examples.py's edit of kalpana.yaml: it names the busybox stand-in in image_fallbacks
and never rewrites what the user wrote (the end-to-end run is tests/integration/test_setup.py)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from gitops.config import load_settings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup_examples.py"
_spec = importlib.util.spec_from_file_location("setup_examples", SCRIPT)
setup_examples = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("setup_examples", setup_examples)  # its dataclasses look their module up there
_spec.loader.exec_module(setup_examples)
name_fallback = setup_examples.name_fallback

IMAGE, TAG = "busybox:1.36", "kalpana-local/busybox:latest"


def fallbacks(config: Path) -> dict[str, str]:
    return load_settings(config, environ={}).image_fallbacks


def test_a_missing_kalpana_yaml_is_created_with_a_comment_saying_why(tmp_path: Path):
    config = tmp_path / "kalpana.yaml"
    assert name_fallback(config, IMAGE, TAG) is None
    text = config.read_text()
    assert text.startswith("# kalpana.yaml: ") and "scripts/setup.sh" in text
    assert fallbacks(config) == {IMAGE: TAG}
    assert load_settings(config, environ={}).instance == "default"  # nothing else set


USER_FILE = """\
# my settings
instance: mine   # keep this comment
stop_timeout: 3
"""


def test_an_existing_file_gets_the_key_appended_and_keeps_every_byte_it_had(tmp_path: Path):
    config = tmp_path / "kalpana.yaml"
    config.write_text(USER_FILE)
    assert name_fallback(config, IMAGE, TAG) is None
    text = config.read_text()
    assert text.startswith(USER_FILE)
    s = load_settings(config, environ={})
    assert (s.instance, s.stop_timeout, s.image_fallbacks) == ("mine", 3, {IMAGE: TAG})


def test_a_file_without_a_final_newline_still_gets_a_valid_key(tmp_path: Path):
    config = tmp_path / "kalpana.yaml"
    config.write_text("instance: mine")
    assert name_fallback(config, IMAGE, TAG) is None
    assert config.read_text().startswith("instance: mine\n")
    assert fallbacks(config) == {IMAGE: TAG}


def test_a_second_image_joins_the_block_the_first_one_made(tmp_path: Path):
    config = tmp_path / "kalpana.yaml"
    config.write_text(USER_FILE)
    assert name_fallback(config, IMAGE, TAG) is None
    assert name_fallback(config, "busybox:latest", TAG) is None
    assert fallbacks(config) == {IMAGE: TAG, "busybox:latest": TAG}
    assert config.read_text().count("image_fallbacks:") == 1


def test_an_existing_block_gets_one_entry_at_its_indentation(tmp_path: Path):
    config = tmp_path / "kalpana.yaml"
    original = textwrap.dedent("""\
        image_fallbacks:   # mine
            python:3.12-slim: local/python
        instance: mine
        """)
    config.write_text(original)
    assert name_fallback(config, IMAGE, TAG) is None
    assert fallbacks(config) == {"python:3.12-slim": "local/python", IMAGE: TAG}
    assert config.read_text().replace(f'    "{IMAGE}": "{TAG}"\n', "") == original


def test_running_twice_changes_nothing_the_second_time(tmp_path: Path):
    config = tmp_path / "kalpana.yaml"
    config.write_text(USER_FILE)
    name_fallback(config, IMAGE, TAG)
    once = config.read_text()
    assert name_fallback(config, IMAGE, TAG) is None
    assert config.read_text() == once


@pytest.mark.parametrize(("text", "says"), [
    ("image_fallbacks:\n  busybox:1.36: my/busybox\n", "already maps busybox:1.36 to my/busybox: left as it is"),
    ('image_fallbacks: {"python:3.12-slim": local/python}\n', "setup edits only the block form"),
])
def test_a_mapping_setup_must_not_touch_is_left_and_said(tmp_path: Path, text: str, says: str):
    config = tmp_path / "kalpana.yaml"
    config.write_text(text)
    why = name_fallback(config, IMAGE, TAG)
    assert why is not None and says in why, why
    assert config.read_text() == text
    assert yaml.safe_load(text) == yaml.safe_load(config.read_text())
