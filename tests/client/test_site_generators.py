"""A site trains every generator with the same DP-SGD plan, ledger and clipping: the generator
changes the loss only, never what is spent or reported."""

from __future__ import annotations

import pytest
import torch

from fedsynth.client.config import SiteConfig
from fedsynth.client.packed_weights import layout_of, pack, unpack
from fedsynth.client.single_pass_clipping import SinglePassClipping
from fedsynth.client.site import Site, SiteError
from fedsynth.model.ck4gen import CK4GenConfig
from fedsynth.model.config import MCMConfig
from fedsynth.model.generators import new_generator
from fedsynth.model.medvae import MedVAEConfig
from tests.client.rdp_reference import independent_epsilon


def _site(frame, schema, path) -> Site:
    config = SiteConfig.from_dict(
        {"site": {"name": "a"}, "privacy": {"target_epsilon": 3.0}, "training": {"local_epochs": 2}}
    )
    return Site(config, schema, path, frame=frame.iloc[:300])


def _two_rounds(site: Site, model_config, schema) -> list[tuple[float, float, int, float]]:
    state = new_generator(model_config).build(schema).network_.state_dict()
    spent = []
    for server_round in (1, 2):
        result = site.train_round(state, model_config, run_id="r", server_round=server_round, planned_rounds=2)
        assert set(result.state_dict) == set(state) and torch.isfinite(torch.tensor(result.train_loss))
        layout = layout_of(result.state_dict)  # what the site sends: floating-point arrays only
        assert unpack(pack(result.state_dict), layout).keys() == result.state_dict.keys()
        state = result.state_dict
        spent.append((result.noise_multiplier, result.sample_rate, result.steps, result.epsilon_spent))
    return spent


@pytest.mark.parametrize(
    "config",
    [
        MedVAEConfig(hidden=(16, 8), latent=4, n_bins=16),
        CK4GenConfig(hidden=(16, 8), latent=4, n_bins=16, teacher="joint"),
    ],
    ids=["medvae", "ck4gen-joint"],
)
def test_a_round_of_any_generator_spends_exactly_what_an_mcm_round_spends(whas500, tmp_path, config) -> None:
    frame, schema = whas500
    mcm_site, vae_site = _site(frame, schema, tmp_path / "mcm"), _site(frame, schema, tmp_path / "vae")
    mcm = _two_rounds(mcm_site, MCMConfig(hidden=16, n_bins=16), schema)
    vae = _two_rounds(vae_site, config, schema)
    assert vae == mcm
    history = [(noise, rate, steps) for noise, rate, steps, _ in vae]
    assert vae[-1][3] == pytest.approx(independent_epsilon(history, vae_site.ledger.target_delta), abs=1e-6)
    recorded = [
        [(e.noise_multiplier, e.sample_rate, e.steps) for e in s.ledger.entries()] for s in (mcm_site, vae_site)
    ]
    assert recorded[0] == recorded[1] == history
    mcm_site.close()
    vae_site.close()


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (CK4GenConfig(), 'teacher = "cox" has no DP-SGD training'),
        (CK4GenConfig(teacher="joint", outcome="copy"), "copies real times and events"),
    ],
    ids=["fitted-cox-teacher", "copied-outcomes"],
)
def test_a_model_without_dp_training_is_refused_before_anything_is_spent(whas500, tmp_path, config, reason) -> None:
    frame, schema = whas500
    site = _site(frame, schema, tmp_path)
    state = new_generator(config).build(schema).network_.state_dict()
    with pytest.raises(SiteError, match=f"site 'a' cannot train this model: CK4Gen with .*{reason}"):
        site.train_round(state, config, run_id="r", server_round=1, planned_rounds=2)
    assert site.ledger.entries() == [] and site.ledger.epsilon() == 0.0
    site.close()


@pytest.mark.parametrize(
    "config",
    [
        MedVAEConfig(hidden=(16, 8), latent=4, n_bins=16),
        CK4GenConfig(hidden=(16, 8), latent=4, n_bins=16, teacher="joint"),
    ],
    ids=["medvae", "ck4gen-joint"],
)
def test_each_records_gradient_is_clipped_on_its_own(whas500, config) -> None:
    """The clipped sum equals clipping each record's own loss gradient: no layer mixes records
    (layer norms, not the paper's batch norm), and the joint teacher's hazards are layers with
    per-record gradients."""
    frame, schema = whas500
    model = new_generator(config).build(schema)
    network, codes = model._network(), model.codes_tensor(frame.iloc[:12])
    clip = 0.5
    with SinglePassClipping(network, clip) as clipping:
        clipping.backward(model.per_record_loss(codes, torch.Generator().manual_seed(0), 0.3))
    clipped_sum = [p.grad.clone() for p in network.parameters()]
    losses = model.per_record_loss(codes, torch.Generator().manual_seed(0), 0.3)
    expected = [torch.zeros_like(p) for p in network.parameters()]
    for row in range(len(codes)):
        grads = torch.autograd.grad(losses[row], list(network.parameters()), retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(network.parameters(), grads, strict=True)]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        for total, grad in zip(expected, grads, strict=True):
            total += grad * min(1.0, clip / float(norm))
    for got, want in zip(clipped_sum, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
