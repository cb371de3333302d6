"""Broken SAE folders: one line naming the folder, what is wrong and the fix; a pickle is never unpickled."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from cli_harness import digest, run_inprocess, with_prior_results

from saeeval.loading.zoo import default_zoo_root

ZOO_SAE = default_zoo_root() / "tiny" / "saes" / "blocks.0.hook_resid_post"


def sae_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "my_sae"
    shutil.copytree(ZOO_SAE, folder)
    return folder


def run_with(folder: Path, out: Path, capfd):
    return run_inprocess(
        "+task=ioi", "saes=folder", f"saes.paths=[{folder}]", "force=true", "limit=8", out=out, capfd=capfd
    )


class Payload:
    """Unpickling this creates a marker file: the proof that saeeval never unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _corrupt_json(f: Path) -> None:
    f.write_text(f.read_text()[:40])


def _json_list(f: Path) -> None:
    f.write_text("[1, 2]")


def _truncate_weights(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _text_weights(f: Path) -> None:
    f.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 262656\n")


@pytest.mark.parametrize(
    ("file", "damage", "needles"),
    [
        ("cfg.json", _corrupt_json, ["cfg.json is not valid JSON", "line 1 column", "sae.save_model"]),
        ("cfg.json", _json_list, ["cfg.json holds a list"]),
        ("sae_weights.safetensors", _truncate_weights, ["not a complete safetensors file", "truncated"]),
        ("sae_weights.safetensors", _text_weights, ["not a complete safetensors file", "another format"]),
    ],
)
def test_damaged_file_is_one_line_naming_the_folder_and_the_fix(tmp_path, capfd, file, damage, needles):
    folder = sae_copy(tmp_path)
    damage(folder / file)
    out = tmp_path / "out"
    before = with_prior_results(out)
    line = run_with(folder, out, capfd).assert_one_line_error(*needles, "re-save it with sae.save_model")
    assert f"'{folder}'" in line
    assert digest(out) == before


def test_pickled_weights_are_refused_by_name_and_never_unpickled(tmp_path, capfd):
    folder = sae_copy(tmp_path)
    (folder / "sae_weights.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (folder / "sae_weights.pt").write_bytes(pickle.dumps(Payload(marker)))
    out = tmp_path / "out"
    before = with_prior_results(out)
    run_with(folder, out, capfd).assert_one_line_error("pickled weights (sae_weights.pt)", "never loads", str(folder))
    assert not marker.exists()
    assert digest(out) == before


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        ({"architecture": "standrad"}, ["architecture 'standrad'", "did you mean 'standard'?"]),
        ({"architecture": "my_custom_sae"}, ["architecture 'my_custom_sae'", "register_sae_class"]),
        ({"d_in": "sixty-four"}, ["could not be loaded by sae_lens"]),
    ],
)
def test_cfg_json_sae_lens_cannot_build_is_one_line(tmp_path, capfd, edit, needles):
    folder = sae_copy(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, **edit}))
    out = tmp_path / "out"
    before = with_prior_results(out)
    run_with(folder, out, capfd).assert_one_line_error(*needles, str(folder))
    assert digest(out) == before


def test_folder_without_weights_is_one_line(tmp_path, capfd):
    folder = sae_copy(tmp_path)
    (folder / "sae_weights.safetensors").unlink()
    run_with(folder, tmp_path / "out", capfd).assert_one_line_error("has no sae_weights.safetensors", str(folder))
