"""Config typos, wrong types and missing values: one line naming the key (and the closest valid key or the
expected type), exit 2, no traceback, the folder's earlier results untouched."""

from __future__ import annotations

from importlib import resources

import pytest
from cli_harness import digest, run_inprocess, with_prior_results
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from saeeval.cli.choices import group_options
from saeeval.cli.config_check import TOP_LEVEL, check_config, widen_overrides


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["bacth_size=3"], ["unknown config key 'bacth_size'", "did you mean batch_size?"]),
        (["+bacth_size=3"], ["unknown config key 'bacth_size'", "did you mean batch_size?"]),  # Hydra's own hint
        (["task.n_exampels=3"], ["'task.n_exampels'", "did you mean task.n_examples?"]),
        (["+task.seeds=3"], ["'task.seeds'", "did you mean task.seed?"]),
        (["model.nme=tiny"], ["'model.nme'", "did you mean model.name?"]),
        (["saes.hook=[blocks.0.hook_resid_post]"], ["'saes.hook'", "did you mean saes.hooks?"]),
        (["mask.positon=[-1]"], ["'mask.positon'", "did you mean mask.positions?"]),
        (["mask.splice.positon=[S2]"], ["'mask.splice.positon'", "did you mean mask.splice.positions?"]),
        (["mask.scor.exclude_special=false"], ["'mask.scor'", "did you mean mask.score?"]),
        (
            ["mask.score.exclude_specail=false"],
            ["'mask.score.exclude_specail'", "did you mean mask.score.exclude_special?"],
        ),
        (["splice.singel=false"], ["'splice.singel'", "did you mean splice.singles?"]),
        (["trainer.acelerator=cpu"], ["'trainer.acelerator'", "did you mean trainer.accelerator?"]),
        (["+trainer.zzz=1"], ["'trainer.zzz'", "valid keys of trainer (lightning.pytorch.Trainer)", "accelerator"]),
    ],
)
def test_unknown_key_anywhere_is_one_line_with_the_closest_valid_key(tmp_path, capfd, overrides, needles):
    before = with_prior_results(tmp_path)
    run_inprocess("+task=ioi", *overrides, out=tmp_path, capfd=capfd).assert_one_line_error(*needles)
    assert digest(tmp_path) == before


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["batch_size=abc"], ["batch_size='abc'", "expected an integer"]),
        (["seed=1.5"], ["seed=1.5", "expected an integer"]),
        (["limit=many"], ["limit='many'", "an integer or null"]),
        (["plot=maybe"], ["plot='maybe'", "true or false"]),
        (["compat=saelns"], ["compat='saelns'", "one of none, saelens, saebench"]),
        (["mask.splice.exclude_special=maybe"], ["mask.splice.exclude_special='maybe'", "true or false"]),
        (["task.n_examples=1e3"], ["task.n_examples=1000.0", "expected an integer"]),
        (["mask.exclude_token_ids=[a,b]"], ["mask.exclude_token_ids=", "a list of (an integer)"]),
        (["trainer.inference_mode=sometimes"], ["trainer.inference_mode='sometimes'", "true or false"]),
    ],
)
def test_wrong_type_is_one_line_naming_the_key_and_the_expected_type(tmp_path, capfd, overrides, needles):
    before = with_prior_results(tmp_path)
    run_inprocess("+task=ioi", *overrides, out=tmp_path, capfd=capfd).assert_one_line_error(*needles)
    assert digest(tmp_path) == before


def test_missing_required_value_names_the_key_and_the_config_that_needs_it(tmp_path, capfd):
    before = with_prior_results(tmp_path)
    outcome = run_inprocess("+task=ioi", "model=hf_folder", out=tmp_path, capfd=capfd)
    outcome.assert_one_line_error("model.name is required by model=hf_folder", "model.name=<value>")
    outcome = run_inprocess("+task=ioi", "saes=folder", out=tmp_path, capfd=capfd)
    outcome.assert_one_line_error("saes.paths is required by saes=folder")
    assert digest(tmp_path) == before


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["batch_size=["], ["no viable alternative at input '['"]),
        (["+batch_size=3"], ["An item is already at 'batch_size'"]),
        (["~model"], ["no model chosen", "tiny"]),
    ],
)
def test_hydra_override_errors_are_one_line(tmp_path, capfd, overrides, needles):
    before = with_prior_results(tmp_path)
    run_inprocess("+task=ioi", *overrides, out=tmp_path, capfd=capfd).assert_one_line_error(*needles)
    assert digest(tmp_path) == before


def test_plain_overrides_are_widened_and_everything_else_is_left_as_given():
    argv = [
        "-m",
        "+task=ioi",
        "batch_size=8,16",
        "task.limit=3",
        "model=tiny",
        "hydra.run.dir=x",
        "hydra/launcher=submitit_local",
        "~logger",
        "++seed=1",
        "+foo=1",
    ]
    assert widen_overrides(argv) == [
        "-m",
        "+task=ioi",
        "++batch_size=8,16",
        "++task.limit=3",
        "model=tiny",
        "hydra.run.dir=x",
        "hydra/launcher=submitit_local",
        "~logger",
        "++seed=1",
        "+foo=1",
    ]


def test_top_level_schema_lists_exactly_the_keys_of_config_yaml():
    shipped = OmegaConf.load(resources.files("saeeval.conf").joinpath("config.yaml"))
    assert set(TOP_LEVEL) == set(shipped) - {"defaults", "hydra"}


def _job_config(*overrides: str):
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        full = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(full):
        full.hydra.runtime.output_dir = "outputs/check"  # what Hydra sets for a real run
    HydraConfig.instance().set_config(full)
    cfg = full.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def test_every_shipped_config_passes_the_check():
    """No false alarms: every task, and every shipped choice of every other group, is accepted as it is."""
    runs = [[f"+task={task}"] for task in group_options("task")]
    required = {"model=hf_folder": ["model.name=some/folder"], "saes=folder": ["saes.paths=[some/sae]"]}
    runs += [
        ["+task=ioi", choice, *required.get(choice, [])]
        for group in ("model", "saes", "mask", "splice", "trainer", "logger", "features")
        for choice in (f"{group}={option}" for option in group_options(group))
    ]
    try:
        for overrides in runs:
            check_config(_job_config(*overrides))
    finally:
        HydraConfig.instance().cfg = None
