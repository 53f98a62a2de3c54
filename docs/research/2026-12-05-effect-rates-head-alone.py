"""Diagnostic (issue 21): per-covariate Adam step multipliers for the hazard head's effects.

The head alone, as benchmarks/head_dp_limit.py trains it (3 IID sites, the sites' DP plan, Opacus
DP-SGD on Adam, FedAvg over 5 rounds, covariates centred at the real pooled mean), with each
effect's step multiplied after Adam by a fixed rate per covariate input. SDs are the pooled real
rows' encoded SDs (a diagnostic; the product takes them from the DP marginal tables).

Arms (third argument, comma-separated): 0 (today), c<k> (k g / s_j), p<k> (k (g / s_j)^2),
k<k> (k g / s_j capped at 3), u<k> (every effect k), with s_j an input's SD and g their geometric
mean. Environment: NM=0 removes the noise, CLIP overrides the clip norm.

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/research/2026-12-05-effect-rates-head-alone.py whas500 0,1,2,3,4,5 0,p1
"""
import sys, json, tempfile
from pathlib import Path
import numpy as np, pandas as pd, torch
import benchmarks.head_dp_limit as H
from benchmarks.federated_sweep import federated_sites
from fedsynth.data.datasets import load_dataset
from fedsynth.model.mcm import MCM
from fedsynth.model.loss import survival_hazard_nll
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.grad_sample import GradSampleModule
from torch.utils.data import DataLoader, TensorDataset

def dp_round(head, x, codes, layout, plan, lr, mult):
    module = GradSampleModule(head)
    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(x, codes), batch_size=plan.batch_size))
    import os
    opt = DPOptimizer(torch.optim.Adam(head.parameters(), lr=lr), noise_multiplier=float(os.environ.get("NM", plan.noise_multiplier)),
                      max_grad_norm=float(os.environ.get("CLIP", plan.max_grad_norm)), expected_batch_size=int(len(x) * loader.sample_rate), loss_reduction="mean")
    for _ in range(plan.local_epochs):
        for xb, cb in loader:
            opt.zero_grad(set_to_none=True)
            survival_hazard_nll(layout, module(xb), cb).sum().backward()
            before = head.effects.weight.detach().clone()
            opt.step()
            with torch.no_grad():
                head.effects.weight.copy_(before + mult * (head.effects.weight - before))
    module._close()

def run(dataset, seed, rounds, cs):
    with tempfile.TemporaryDirectory() as tmp:
        frame, schema = load_dataset(dataset)
        sites = federated_sites(frame, schema, seed, Path(tmp))
        lr = sites[0].config.training.learning_rate
        model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"seed": seed})).build(schema)
        layout, covariates = model.network_.layout, model.network_.covariate_input
        codes = [model.codes_tensor(s.train) for s in sites]
        enc = torch.cat([layout.encode_codes(c) for c in codes])
        centre = enc.mean(0)
        sd = enc.std(0)
        x = [(layout.encode_codes(c) - centre) * covariates for c in codes]
        holdout_x = [(layout.encode_codes(model.codes_tensor(s.holdout)) - centre) * covariates for s in sites]
        all_x, all_codes = torch.cat(x), torch.cat(codes)
        mle = H.fit_mle(layout, all_x, all_codes)
        live = covariates.bool()
        errors = H.EffectErrors(mle, layout, all_x, all_codes, live)
        tc, ec = schema.time_column, schema.event_column
        def event_risk(head):
            with torch.no_grad():
                return [head(hx)[:, -1].numpy() for hx in holdout_x]
        res = {"seed": seed, "head_mle": H.harrell(sites, tc, ec, event_risk(mle))}
        plans = [s.plan("limit", rounds) for s in sites]
        gm = float(torch.exp(torch.log(sd[live].clamp_min(0.02)).mean()))
        print("gm", gm, "mult", [round(float(v),2) for v in (gm/sd.clamp_min(0.02))[live]], flush=True)
        for c in cs:
            label = c
            if c.startswith("u"):
                mult = torch.where(live, float(c[1:]) * torch.ones_like(sd), torch.ones_like(sd))
            elif c.startswith("p"):
                mult = torch.where(live, float(c[1:]) * (gm / sd.clamp_min(0.02)) ** 2, torch.ones_like(sd))
            elif c.startswith("k"):
                mult = torch.where(live, (float(c[1:]) * gm / sd.clamp_min(0.02)).clamp(max=3.0), torch.ones_like(sd))
            elif float(c) == 0:
                mult = torch.ones_like(sd)
            else:
                c = float(c)
                mult = torch.where(live, (c * gm / sd.clamp_min(0.02)), torch.ones_like(sd)) if c > 0 else torch.where(live, (-c / sd.clamp_min(0.02)), torch.ones_like(sd))
            mult2 = mult.unsqueeze(0).expand(2, -1)
            state = H.new_head(layout.encoded_width, layout.n_bins).state_dict()
            for _ in range(rounds):
                replies = []
                for sx, scodes, plan in zip(x, codes, plans):
                    head = H.new_head(layout.encoded_width, layout.n_bins); head.load_state_dict(state)
                    dp_round(head, sx, scodes, layout, plan, lr, mult2)
                    replies.append((head.state_dict(), len(sx)))
                tot = sum(n for _, n in replies)
                state = {k: sum(sd_[k] * n for sd_, n in replies) / tot for k in state}
            head = H.new_head(layout.encoded_width, layout.n_bins); head.load_state_dict(state)
            res[f"c{label}_C"] = round(H.harrell(sites, tc, ec, event_risk(head)), 4)
            inside, mz = errors(head.effects.weight[1])
            zz = ((head.effects.weight[1].detach()[errors.live] - errors.mle) / errors.se)
            print("Z", label, [round(float(v), 2) for v in zz], flush=True)
            res[f"c{label}_inside"], res[f"c{label}_mz"] = round(inside, 3), round(mz, 3)
        return res

if __name__ == "__main__":
    ds = sys.argv[1]; seeds = [int(s) for s in sys.argv[2].split(",")]; cs = sys.argv[3].split(",")
    out = []
    for s in seeds:
        r = run(ds, s, 5, cs); print(json.dumps(r), flush=True); out.append(r)
    keys = [k for k in out[0] if k != "seed"]
    print("MEAN", json.dumps({k: round(float(np.mean([o[k] for o in out])), 4) for k in keys}))
