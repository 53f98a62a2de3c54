"""Known-answer checks of the network's masking contract and its DP-SGD readiness."""

from __future__ import annotations

import torch
from torch import nn

from fedsynth.data.datasets import bundled_schema
from fedsynth.model.layout import Layout
from fedsynth.model.loss import masked_nll_per_sample
from fedsynth.model.network import MASKED_SCORE, MCMNetwork


def _network(name: str = "gbsg2") -> MCMNetwork:
    torch.manual_seed(0)
    return MCMNetwork(Layout(bundled_schema(name), n_bins=16), hidden=64)


def _random_codes(layout: Layout, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.rand(n, layout.n_columns, generator=g)
    for head in layout.heads:
        if not head.column.is_numeric:
            codes[:, head.index] = torch.randint(0, head.n_outcomes, (n,), generator=g).float()
    return codes


def test_masked_values_do_not_influence_the_output() -> None:
    network = _network()
    layout = network.layout
    codes = _random_codes(layout, 64)
    masked = torch.rand(64, layout.n_columns, generator=torch.Generator().manual_seed(1)) < 0.5
    other = torch.where(masked, _random_codes(layout, 64, seed=9), codes)
    out1 = network(layout.encode_codes(codes), masked)
    out2 = network(layout.encode_codes(other), masked)
    torch.testing.assert_close(out1, out2)


def test_everything_masked_gives_finite_output() -> None:
    network = _network()
    layout = network.layout
    masked = torch.ones(8, layout.n_columns, dtype=torch.bool)
    out = network(layout.encode_codes(_random_codes(layout, 8)), masked)
    assert torch.isfinite(out).all()


def test_no_batchnorm_only_layernorm() -> None:
    modules = list(_network().modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    assert any(isinstance(m, nn.LayerNorm) for m in modules)


def test_default_hidden_width_is_64() -> None:
    from fedsynth.model.config import MCMConfig

    assert MCMConfig().hidden == 64


def test_per_sample_loss_depends_only_on_its_own_row() -> None:
    """Row i's loss gradient must not involve row j: what per-sample clipping relies on."""
    network = _network()
    layout = network.layout
    codes = _random_codes(layout, 6)
    masked = torch.ones(6, layout.n_columns, dtype=torch.bool)
    masked[:, 0] = False
    encoded = layout.encode_codes(codes).requires_grad_(True)
    losses = masked_nll_per_sample(layout, network(encoded, masked), codes, masked)
    (grad,) = torch.autograd.grad(losses[2], encoded)
    assert grad[2].abs().sum() > 0
    assert grad[[0, 1, 3, 4, 5]].abs().sum() == 0


def test_loss_only_counts_masked_columns() -> None:
    network = _network()
    layout = network.layout
    codes = _random_codes(layout, 4)
    masked = torch.zeros(4, layout.n_columns, dtype=torch.bool)
    masked[:, 1] = True
    logits = network(layout.encode_codes(codes), masked)
    from fedsynth.model.loss import column_nll

    expected = column_nll(layout, logits, codes)[:, 1]
    torch.testing.assert_close(masked_nll_per_sample(layout, logits, codes, masked), expected)


def test_head_logits_match_full_forward() -> None:
    network = _network("actg320")
    layout = network.layout
    codes = _random_codes(layout, 5)
    masked = torch.zeros(5, layout.n_columns, dtype=torch.bool)
    hidden = network.trunk(layout.encode_codes(codes), masked)
    full = network.heads(hidden)
    for head in layout.heads:
        torch.testing.assert_close(network.head_logits(hidden, head.index), full[:, head.out_start : head.out_stop])


def test_smoothed_bin_targets_are_distributions_centred_on_the_value() -> None:
    from fedsynth.model.loss import smoothed_bin_targets

    unit = torch.tensor([0.0, 0.33, 0.999])
    soft = smoothed_bin_targets(unit, 16, 0.75)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(3))
    assert soft.argmax(dim=1).tolist() == [0, 5, 15]
    # sigma -> 0 recovers the one-hot bin target
    sharp = smoothed_bin_targets(unit, 16, 1e-4)
    assert sharp.max(dim=1).values.min() > 0.999


def test_misspelt_config_override_is_rejected() -> None:
    import pytest
    from pydantic import ValidationError

    from fedsynth.model.mcm import MCM

    with pytest.raises(ValidationError, match="epoch"):
        MCM(epoch=3)


def test_inference_trunk_matches_the_module_for_random_masks():
    """The sampler's allocation-free trunk computes exactly the network's trunk (to rounding)."""
    from fedsynth.model.inference import InferenceTrunk

    torch.manual_seed(3)
    layout = Layout(bundled_schema("gbsg2"), n_bins=16)
    network = MCMNetwork(layout, hidden=32).eval()
    for parameter in network.parameters():  # non-trivial LayerNorm affine parameters too
        torch.nn.init.normal_(parameter, std=0.5)
    n = 257
    encoded = torch.rand(n, layout.encoded_width)
    masked = torch.rand(n, layout.n_columns) < 0.5
    masked[:, 0] = False  # at least one visible column per row
    input_masked = torch.index_select(masked, 1, layout.input_column)
    visible = encoded.masked_fill(input_masked, 0.0)
    score_bias = input_masked.float() * MASKED_SCORE
    trunk = InferenceTrunk(network, rows=300)
    with torch.inference_mode():
        expected = network.trunk_visible(visible, masked.float(), score_bias)
        got = trunk(visible, masked.float(), score_bias)
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
        # a smaller batch reuses the same buffers and still agrees
        got_small = trunk(visible[:10], masked[:10].float(), score_bias[:10]).clone()
        assert torch.allclose(got_small, expected[:10], atol=1e-5, rtol=1e-4)


def test_a_retired_option_at_its_old_default_is_dropped_and_any_other_value_refused_by_name() -> None:
    import pytest
    from pydantic import ValidationError

    from fedsynth.model.config import RETIRED_OPTIONS, MCMConfig, without_retired_options

    # Older models and runs record every field: at the old default they trained as today.
    assert MCMConfig.model_validate({"hidden": 8, **RETIRED_OPTIONS}) == MCMConfig(hidden=8)
    for name, value in [("dp_head_clip_fraction", 0.95), ("survival_effect_steps", 400), ("iterate_averaging", 0.1)]:
        with pytest.raises(ValidationError, match=f"{name} was a site-optimiser option.*remove it from \\[model\\]"):
            MCMConfig.model_validate({name: value})
        # Sampling never read them: a saved model trained with one still loads.
        assert MCMConfig.model_validate(without_retired_options({"hidden": 8, name: value})) == MCMConfig(hidden=8)
