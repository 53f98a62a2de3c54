"""Oracle (not private): one factor vs a factor per kind of covariate (numeric / discrete effects), each
fitted by likelihood (with a free event level) on the pooled real training rows; protocol scores
(TSTR - TRTR, HR-in-CI) on 3 draws each at slope 1 ("s1"), the one factor ("one") and the two ("two").

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/research/2026-12-05-head-slope-two-factor.py DIR/whas500-*
"""
import sys, json, copy
from pathlib import Path
import numpy as np, torch
from scipy.optimize import minimize
from fedsynth.model.generators import load_generator
from fedsynth.model.loss import survival_hazard_nll
from fedsynth.server.run import RunDirectory
from fedsynth.server.simulation_score import site_tables, score_sample

for run in sys.argv[1:]:
    run = Path(run)
    doc = json.loads((run / "head_slope.json").read_text())
    trained = doc["round"] - 10000
    tables = site_tables(run)
    n = sum(len(t) for _, t, _ in tables)
    base = load_generator(run / "checkpoints" / f"round-{trained:04d}").calibrate_to(RunDirectory(run).marginal_target())
    net, layout = base.network_, base.network_.layout
    numeric = torch.zeros(layout.encoded_width, dtype=torch.bool)
    for h in layout.numeric:
        numeric[h.in_start:h.in_stop] = True
    w = net.survival_head.effects.weight.detach().clone()
    pooled = __import__("pandas").concat([t for _, t, _ in tables], ignore_index=True)
    codes = base.codes_tensor(pooled)
    with torch.no_grad():
        enc = layout.encode_codes(codes)
        logits = net.survival_logits(enc)
        x = (enc - net.covariate_centre()) * net.covariate_input
        eta_num = (x[:, numeric] @ w[1, numeric]) * net.survival_head.effect_scale
        eta_disc = (x[:, ~numeric] @ w[1, ~numeric]) * net.survival_head.effect_scale
    nb = layout.n_bins
    def nll(p):
        a, sn, sd = p
        L = logits.clone(); L[:, nb:] += a + (sn - 1) * eta_num.unsqueeze(1) + (sd - 1) * eta_disc.unsqueeze(1)
        return float(survival_hazard_nll(layout, L, codes).sum())
    one = minimize(lambda p: nll([p[0], p[1], p[1]]), [0, 1], method="Nelder-Mead").x
    two = minimize(nll, [0, 1, 1], method="Nelder-Mead").x
    out = {"run": run.name, "factor": round(float(one[1]), 3), "level": round(float(one[0]), 3),
           "num": round(float(two[1]), 3), "disc": round(float(two[2]), 3)}
    for label, (sn, sd) in (("s1", (1, 1)), ("one", (one[1], one[1])), ("two", (two[1], two[2]))):
        model = copy.deepcopy(base)
        with torch.no_grad():
            W = model.network_.survival_head.effects.weight
            W[1, numeric] = w[1, numeric] * sn; W[1, ~numeric] = w[1, ~numeric] * sd
        model._event_offsets = {}
        g, h = [], []
        for d in range(3):
            try:
                sc = score_sample(tables, model.sample(n, seed=100 + d), model.schema_, True)
            except Exception:
                continue
            g.append(sc.cindex_tstr - sc.cindex_trtr); h.append(sc.hr_in_ci_fraction)
        out[label] = (round(float(np.mean(g)), 4), round(float(np.mean(h)), 3))
    print(json.dumps(out), flush=True)
