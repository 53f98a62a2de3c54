"""Offline simulation of a DP slope release: per site clipped score of the event-effect slope at s=1
(real training rows), Gaussian noise sigma*C per site, summed; information from the model's own
10x sample; s_hat = 1 + U/I bounded; then the protocol's scores at s=1 and s_hat (3 draws each)."""
import sys, json
from pathlib import Path
import numpy as np, torch
from fedsynth.model.generators import load_generator
from fedsynth.server.simulation_score import site_tables, score_sample
from fedsynth.model.loss import survival_hazard_nll

sigma, clip = float(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(int(sys.argv[3]))
torch.set_default_dtype(torch.float64)

def parts(model, sampler, frame):
    net, layout = model.network_, sampler.layout
    codes = sampler._codes_of(frame).double()
    with torch.no_grad():
        enc = layout.encode_codes(codes)
        logits = net.double().survival_logits(enc)
        head = net.survival_head
        x = (enc - net.covariate_centre()) * net.covariate_input
        eta = (x @ head.effects.weight[1]) * head.effect_scale
    return codes, logits, eta

def nll(layout, nb, codes, logits, eta, s, offset):
    L = logits.clone(); L[:, nb:] += offset + (s - 1.0) * eta.unsqueeze(1)
    return survival_hazard_nll(layout, L, codes)

for run in sys.argv[4:]:
    run = Path(run)
    tables = site_tables(run)
    n = sum(len(t) for _, t, _ in tables)
    model = load_generator(run / "model")
    sampler = model._sampler(100)
    layout, nb = sampler.layout, sampler.layout.n_bins
    offset = model._event_offset(sampler)
    h = 1e-4
    U = 0.0
    for _, train, _ in tables:
        c, l, e = parts(model, sampler, train)
        sc = -(nll(layout, nb, c, l, e, 1 + h, offset) - nll(layout, nb, c, l, e, 1 - h, offset)) / (2 * h)
        U += float(sc.clamp(-clip, clip).sum()) + rng.normal(0, sigma * clip)
    syn = model.sample(10 * n, seed=7)
    c, l, e = parts(model, sampler, syn)
    f = lambda s: float(nll(layout, nb, c, l, e, s, offset).sum())
    info = (f(1 + 1e-2) + f(1 - 1e-2) - 2 * f(1.0)) / 1e-4 / 10
    s_hat = float(np.clip(1 + U / info, 0.5, 2.0))
    model.network_.float()
    torch.set_default_dtype(torch.float32)
    head = model.network_.survival_head
    w0 = head.effects.weight.detach().clone()
    for label, s in (("one", 1.0), ("dp", s_hat)):
        with torch.no_grad():
            head.effects.weight.copy_(w0); head.effects.weight[1] *= s
        model._event_offsets = {}
        gaps, hrs = [], []
        for d in range(3):
            try:
                sc = score_sample(tables, model.sample(n, seed=100 + d), model.schema_, True)
            except Exception as exc:
                print("fail", run.name, label, d, type(exc).__name__, flush=True); continue
            gaps.append(sc.cindex_tstr - sc.cindex_trtr); hrs.append(sc.hr_in_ci_fraction)
        print(json.dumps(dict(run=run.name, arm=label, s=round(s, 3), U=round(U, 2), info=round(info, 1),
                              gap=float(np.mean(gaps)), hr=float(np.mean(hrs)))), flush=True)
    torch.set_default_dtype(torch.float64)
