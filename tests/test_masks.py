"""TokenMask: padding always out, special/token-id exclusion, indexed and task-named positions; Masks: splice vs
score."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from saeeval.engine.masks import Masks, TokenMask, special_token_ids
from saeeval.errors import SaeevalError

EOT = 50256  # GPT-2: bos == eos == pad
CONF = Path(__file__).parent.parent / "saeeval" / "conf" / "mask"


@pytest.fixture
def batch():
    """GPT-2 style left-padded rows: row 0 full, row 1 two pads, row 2 four pads; every row starts with BOS."""
    tokens = torch.tensor(
        [
            [EOT, 10, 11, 12, 13, 14],
            [EOT, EOT, EOT, 20, 13, 21],
            [EOT, EOT, EOT, EOT, EOT, 30],
        ]
    )
    am = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    return tokens, am


def test_special_token_ids_of_gpt2_is_the_single_endoftext_id(gpt2_tokenizer):
    assert special_token_ids(gpt2_tokenizer) == [EOT]
    assert special_token_ids(None) == []


def test_default_mask_drops_bos_and_padding_even_when_pad_is_not_listed(batch):
    tokens, am = batch
    got = TokenMask()(tokens, am, special_ids=[EOT])
    want = torch.tensor([[0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(got, want)
    # no special ids given: padding still out (attention mask), BOS kept
    assert torch.equal(TokenMask()(tokens, am), am.bool())
    assert torch.equal(TokenMask(exclude_special=False)(tokens, am, special_ids=[EOT]), am.bool())


def test_token_id_exclusion_drops_every_occurrence(batch):
    tokens, am = batch
    got = TokenMask(exclude_special=False, exclude_token_ids=[13])(tokens, am, special_ids=[EOT])
    assert got.sum().item() == am.sum().item() - 2
    assert not got[0, 4] and not got[1, 4]


def test_integer_positions_index_real_tokens_of_left_padded_rows(batch):
    tokens, am = batch
    last = TokenMask(positions=[-1])(tokens, am, special_ids=[EOT])
    assert last.nonzero().tolist() == [[0, 5], [1, 5], [2, 5]]
    first_real = TokenMask(exclude_special=False, positions=[0, 1])(tokens, am, special_ids=[EOT])
    assert first_real.nonzero().tolist() == [[0, 0], [0, 1], [1, 2], [1, 3], [2, 4], [2, 5]]
    # BOS is position 0; with special exclusion on it stays out
    assert TokenMask(positions=[0])(tokens, am, special_ids=[EOT]).sum().item() == 0
    # a row shorter than the index contributes nothing
    assert TokenMask(positions=[-3])(tokens, am).nonzero().tolist() == [[0, 3], [1, 3]]
    # Hydra may pass "-1" as a string
    assert torch.equal(TokenMask(positions=["-1"])(tokens, am), last)


def test_integer_positions_also_work_on_right_padded_rows():
    tokens = torch.tensor([[5, 6, 7], [5, 6, 0]])
    am = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert TokenMask(positions=[-1])(tokens, am).nonzero().tolist() == [[0, 2], [1, 1]]


def test_named_positions_select_task_columns(batch):
    tokens, am = batch
    named = {"END": torch.tensor([5, 5, 5]), "S1": torch.tensor([2, 3, 4])}
    got = TokenMask(positions=["S1", "END"])(tokens, am, named_positions=named, special_ids=[EOT])
    # row 2's S1 column is its BOS, which special exclusion removes
    assert got.nonzero().tolist() == [[0, 2], [0, 5], [1, 3], [1, 5], [2, 5]]


def test_unknown_position_name_lists_what_the_task_offers(batch):
    tokens, am = batch
    named = {"IO": torch.zeros(3, dtype=torch.long), "END": torch.zeros(3, dtype=torch.long)}
    with pytest.raises(SaeevalError, match=r"'answer' is not offered by this task \(it offers: END, IO\)"):
        TokenMask(positions=["answer"])(tokens, am, named_positions=named)
    with pytest.raises(SaeevalError, match="it offers: none"):
        TokenMask(positions=["answer"])(tokens, am)


def test_describe_records_the_policy():
    d = TokenMask(exclude_token_ids=[7], positions=["END", -1]).describe()
    assert d == {"exclude_special": True, "exclude_token_ids": [7], "positions": ["END", -1]}
    both = Masks(splice={"positions": ["S2"]}).describe("saelens")
    assert both["splice"]["positions"] == ["S2"] and both["score"]["positions"] is None
    assert both["compat"] == "saelens" and "special tokens included" in both["ablation"]
    assert both["padding"] == "excluded" and both["reconstruction"] == "where the SAE is spliced"


@pytest.mark.parametrize(
    "name, splice_positions, exclude_special",
    [
        ("default", None, True),
        ("none", None, False),
        ("answer", [-1], True),
        ("token_ids", None, True),
        ("positions", ["END"], True),
    ],
)
def test_mask_configs_splice_where_named_and_score_every_real_token(name, splice_positions, exclude_special):
    mask = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(mask, Masks)
    assert mask.splice.positions == splice_positions and mask.splice.exclude_special is exclude_special
    assert mask.score.positions is None and mask.score.exclude_special is exclude_special


def test_splice_at_one_position_scores_every_real_token(batch):
    tokens, am = batch
    named = {"S2": torch.tensor([3, 4, 5])}
    got = Masks(positions=["S2"])(tokens, am, named, [EOT])
    assert got.splice.nonzero().tolist() == [[0, 3], [1, 4], [2, 5]]
    assert torch.equal(got.score, TokenMask()(tokens, am, special_ids=[EOT]))
    assert got.ablate is got.splice


def test_compat_ablates_special_tokens_and_excluded_ids_too(batch):
    tokens, am = batch
    masks = Masks(exclude_token_ids=[13])
    for compat in ("saelens", "saebench"):
        got = masks(tokens, am, None, [EOT], compat=compat)
        assert torch.equal(got.ablate, am.bool())  # BOS/EOT and id 13 zeroed too, padding never
        assert torch.equal(got.splice, TokenMask(exclude_token_ids=[13])(tokens, am, special_ids=[EOT]))
    assert torch.equal(masks(tokens, am, None, [EOT]).ablate, masks(tokens, am, None, [EOT]).splice)


def test_shorthands_fill_the_splice_mask_and_both_masks():
    masks = Masks(positions=[-1], exclude_token_ids=[5], score={"exclude_token_ids": [9]})
    assert masks.splice.positions == [-1] and masks.score.positions is None
    assert masks.splice.exclude_token_ids == [5] and masks.score.exclude_token_ids == [9, 5]
    assert masks.exclude_token_ids == [5, 9]
    assert Masks(positions=[-1], splice={"positions": ["-1"]}).splice.positions == [-1]
    with pytest.raises(SaeevalError, match="mask.positions=\\['S2'\\] and mask.splice.positions=\\['END'\\] disagree"):
        Masks(positions=["S2"], splice={"positions": ["END"]})
