"""Diagnostic: the MLE of the event-effect slope s (and event offset a) of each kept model's
hazard head on the pooled real training rows (a grid), and per-record score magnitudes. Its "info"
is a float32 finite difference and unreliable: the information came from the dp-sim script.

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/research/2026-12-05-head-slope-mle.py DIR/actg320-*
"""
import sys, json
from pathlib import Path
import numpy as np, pandas as pd, torch
from fedsynth.model.generators import load_generator
from fedsynth.server.simulation_score import site_tables
from fedsynth.model.loss import survival_hazard_nll

for run in sys.argv[1:]:
    run = Path(run)
    tables = site_tables(run)
    model = load_generator(run / "model")
    sampler = model._sampler(100)
    net, layout = model.network_, sampler.layout
    nb = layout.n_bins
    offset = model._event_offset(sampler)
    per_site = []
    for name, train, _ in tables:
        codes = sampler._codes_of(train)
        with torch.no_grad():
            enc = layout.encode_codes(codes)
            logits = net.survival_logits(enc)
            head = net.survival_head
            x = (enc - net.covariate_centre()) * net.covariate_input
            eta = (x @ head.effects.weight[1]) * head.effect_scale  # event linear predictor (no bias)
        per_site.append((codes, logits, eta))
    def nll(a, s, which=None):
        tot = []
        for codes, logits, eta in per_site:
            L = logits.clone()
            L[:, nb:] += offset + a + (s - 1.0) * eta.unsqueeze(1)
            tot.append(survival_hazard_nll(layout, L, codes))
        return tot
    # grid MLE
    best = None
    for s in np.arange(0.5, 2.51, 0.05):
        for a in np.arange(-0.6, 0.61, 0.05):
            v = float(sum(t.sum() for t in nll(a, s)))
            if best is None or v < best[0]:
                best = (v, a, s)
    v, a, s = best
    # per-record score in s at s=1, a=0 (numerical)
    h = 1e-3
    up = nll(0.0, 1 + h); dn = nll(0.0, 1 - h)
    scores = [-(u - d) / (2 * h) for u, d in zip(up, dn)]
    sc = torch.cat(scores).numpy()
    c0 = float(sum(t.sum() for t in nll(0.0, 1.0)))
    info = (float(sum(t.sum() for t in up)) + float(sum(t.sum() for t in dn)) - 2 * c0) / h**2
    print(json.dumps(dict(run=run.name, s_mle=round(s, 2), a_mle=round(a, 2), eta_sd=float(torch.cat([e for _,_,e in per_site]).std()),
        total_score=float(sc.sum()), info=info, score_abs_q=[float(np.quantile(np.abs(sc), q)) for q in (0.5, 0.9, 0.99, 1.0)],
        n=len(sc))), flush=True)
