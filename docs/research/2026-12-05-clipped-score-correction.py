"""Diagnostic (issue 21, not adopted): clipping-bias correction for the hazard head alone.

    NOISE=1 OMP_NUM_THREADS=1 PYTHONPATH=. python docs/research/2026-12-05-clipped-score-correction.py whas500 0,1,2 plain,half,reclip


Per-record contribution: clip_C(g_i) - E_{y ~ model(x_i)}[clip_C(g(x_i, y))]  (Fisher-consistent
clipped score), then either halved (mode 'half': norm <= C) or re-clipped at C (mode 'reclip').
Manual DP-SGD with Poisson sampling matching the site's plan; Adam; FedAvg over 3 sites.
"""
import os, sys, json, math, tempfile
from pathlib import Path
import numpy as np, torch
from torch.func import functional_call, grad, vmap
import benchmarks.head_dp_limit as H
from benchmarks.federated_sweep import federated_sites
from fedsynth.data.datasets import load_dataset
from fedsynth.model.mcm import MCM
from fedsynth.model.loss import hazard_log_probs
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS

def outcome_logp(logits):
    """(n, 2, B) log P(end in bin b by cause c)."""
    log_nothing, log_cause = hazard_log_probs(logits)
    survived = torch.cumsum(torch.nn.functional.pad(log_nothing[:, :-1], (1, 0)), dim=1)
    return survived.unsqueeze(1) + log_cause

def run(dataset, seed, rounds, arms, noise_on=True):
    with tempfile.TemporaryDirectory() as tmp:
        frame, schema = load_dataset(dataset)
        sites = federated_sites(frame, schema, seed, Path(tmp))
        lr = sites[0].config.training.learning_rate
        model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"seed": seed})).build(schema)
        layout, covariates = model.network_.layout, model.network_.covariate_input
        time = next(h for h in layout.heads if h.column.role == "time")
        event = next(h for h in layout.heads if h.column.role == "event")
        codes = [model.codes_tensor(s.train) for s in sites]
        enc = torch.cat([layout.encode_codes(c) for c in codes]); centre = enc.mean(0)
        x = [(layout.encode_codes(c) - centre) * covariates for c in codes]
        ys = [(layout.bin_index(c[:, time.index]), c[:, event.index].long()) for c in codes]
        holdout_x = [(layout.encode_codes(model.codes_tensor(s.holdout)) - centre) * covariates for s in sites]
        all_x, all_codes = torch.cat(x), torch.cat(codes)
        mle = H.fit_mle(layout, all_x, all_codes)
        errors = H.EffectErrors(mle, layout, all_x, all_codes, covariates.bool())
        tc, ec = schema.time_column, schema.event_column
        res = {"seed": seed, "head_mle": round(H.harrell(sites, tc, ec, [mle(h)[:, -1].detach().numpy() for h in holdout_x]), 4)}
        plans = [s.plan("limit", rounds) for s in sites]
        B = layout.n_bins
        for arm in arms:
            g = torch.Generator().manual_seed(1000 + seed)
            state = H.new_head(layout.encoded_width, B).state_dict()
            for _ in range(rounds):
                replies = []
                for sx, (sb, sc), plan in zip(x, ys, plans):
                    head = H.new_head(layout.encoded_width, B); head.load_state_dict(state)
                    params = {k: v.detach().clone().requires_grad_(False) for k, v in head.named_parameters()}
                    def nll(p, xi, oh):
                        lp = outcome_logp(functional_call(head, p, (xi.unsqueeze(0),)))[0]
                        return -(lp.reshape(-1) * oh).sum()
                    _per = vmap(grad(nll), in_dims=(None, 0, 0))
                    per = lambda P, xs, bs, cs: _per(P, xs, torch.nn.functional.one_hot(cs * B + bs, 2 * B).float())
                    n = len(sx); steps = math.ceil(n / plan.batch_size); q = 1.0 / steps
                    C = float(os.environ.get("CLIP", plan.max_grad_norm)); z = plan.noise_multiplier if noise_on else 0.0
                    opt = torch.optim.Adam([params[k].requires_grad_(True) for k in params], lr=lr)
                    names = list(params)
                    for _ in range(plan.local_epochs * steps):
                        mask = torch.rand(n, generator=g) < q
                        idx = mask.nonzero().squeeze(1)
                        total = {k: torch.zeros_like(v) for k, v in params.items()}
                        if len(idx):
                            P = {k: v.detach() for k, v in params.items()}
                            xb, bb, cb = sx[idx], sb[idx], sc[idx]
                            gi = per(P, xb, bb, cb)
                            flat = torch.cat([gi[k].reshape(len(idx), -1) for k in names], 1)
                            fac = (C / (flat.norm(dim=1) + 1e-12)).clamp(max=1.0)
                            contrib = flat * fac.unsqueeze(1)
                            if arm != "plain":
                                # every outcome (cause c, bin b) for each record
                                cc_, bb_ = torch.meshgrid(torch.arange(2), torch.arange(B), indexing="ij")
                                cc_, bb_ = cc_.reshape(-1), bb_.reshape(-1)
                                K = len(cc_)
                                xr = xb.repeat_interleave(K, 0); br = bb_.repeat(len(idx)); cr = cc_.repeat(len(idx))
                                ga = per(P, xr, br, cr)
                                fa = torch.cat([ga[k].reshape(len(xr), -1) for k in names], 1)
                                fa = fa * (C / (fa.norm(dim=1) + 1e-12)).clamp(max=1.0).unsqueeze(1)
                                with torch.no_grad():
                                    pr = outcome_logp(functional_call(head, P, (xb,))).exp().reshape(len(idx), K)
                                expect = (fa.reshape(len(idx), K, -1) * pr.unsqueeze(2)).sum(1)
                                contrib = contrib - expect
                                if arm == "half":
                                    contrib = contrib / 2
                                elif arm == "reclip":
                                    contrib = contrib * (C / (contrib.norm(dim=1) + 1e-12)).clamp(max=1.0).unsqueeze(1)
                            s = contrib.sum(0)
                            off = 0
                            for k in names:
                                m = params[k].numel(); total[k] = s[off:off + m].reshape(params[k].shape); off += m
                        opt.zero_grad()
                        for k in names:
                            noise = torch.randn(params[k].shape, generator=g) * z * C
                            params[k].grad = (total[k] + noise) / (n * q)
                        opt.step()
                    replies.append(({k: v.detach() for k, v in params.items()}, n))
                tot = sum(m for _, m in replies)
                state = {k: sum(sd[k] * m for sd, m in replies) / tot for k in state}
            head = H.new_head(layout.encoded_width, B); head.load_state_dict(state)
            with torch.no_grad():
                res[f"{arm}_C"] = round(H.harrell(sites, tc, ec, [head(h)[:, -1].numpy() for h in holdout_x]), 4)
            inside, mz = errors(head.effects.weight[1])
            res[f"{arm}_in"], res[f"{arm}_mz"] = round(inside, 3), round(mz, 3)
            zz = ((head.effects.weight[1].detach()[errors.live] - errors.mle) / errors.se)
            print("Z", arm, [round(float(v), 1) for v in zz], flush=True)
        return res

if __name__ == "__main__":
    ds = sys.argv[1]; seeds = [int(s) for s in sys.argv[2].split(",")]; arms = sys.argv[3].split(",")
    noise_on = os.environ.get("NOISE", "1") == "1"
    out = []
    for s in seeds:
        r = run(ds, s, 5, arms, noise_on); print(json.dumps(r), flush=True); out.append(r)
    keys = [k for k in out[0] if k != "seed"]
    print("MEAN", json.dumps({k: round(float(np.mean([o[k] for o in out])), 4) for k in keys}))
