"""Diagnostic (issue 21): the hazard head alone, with numeric covariate inputs scaled to a fixed SD.

As docs/research/2026-12-05-effect-rates-head-alone.py (3 IID sites, the sites' DP plan, Opacus
DP-SGD on Adam, FedAvg over 5 rounds, covariates centred at the real pooled mean), with each
numeric input multiplied by K / s_j (s_j its pooled encoded SD) so that its gradient, not only its
step, grows; effects are scored back in the original units. Arms (third argument): 0 (Adam's own
steps), P (the product's effect rates: (g / s)^2 within 1/16-16, at most 1 for a discrete level),
s<K> (numeric inputs scaled to SD K), s<K>P (both, the rates taken on the scaled SDs).
Environment: NM=0 removes the noise, CLIP overrides the clip norm.

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/research/2026-12-05-head-input-scale-head-alone.py actg320 0,1,2,3,4,5 0,P,s0.5,s0.5P,s0.3P
"""
import sys, json, tempfile, importlib.util
from pathlib import Path
import numpy as np, pandas as pd, torch
import benchmarks.head_dp_limit as H
from benchmarks.federated_sweep import federated_sites
from fedsynth.data.datasets import load_dataset
from fedsynth.model.mcm import MCM
from fedsynth.model.loss import survival_hazard_nll
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS

# The same DP round as the effect-rates diagnostic (Opacus DP-SGD on Adam, the step scaled after).
_spec = importlib.util.spec_from_file_location("rates", Path(__file__).with_name("2026-12-05-effect-rates-head-alone.py"))
_rates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rates)
dp_round = _rates.dp_round

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
        numeric = torch.zeros_like(sd, dtype=torch.bool)
        for h in layout.numeric:
            numeric[h.in_start:h.in_stop] = True
        numeric &= live
        for c in cs:
            label = c
            scale = torch.ones_like(sd)
            arm = c
            if arm.startswith("s"):
                body = arm[1:].rstrip("P")
                scale = torch.where(numeric, float(body) / sd.clamp_min(0.02), torch.ones_like(sd))
            ssd = sd * scale
            sgm = float(torch.exp(torch.log(ssd[live].clamp_min(0.02)).mean()))
            if arm.endswith("P"):
                mult = torch.where(live, ((sgm / ssd.clamp_min(0.02)) ** 2).clamp(1 / 16, 16), torch.ones_like(sd))
                mult = torch.where(live & ~numeric, mult.clamp(max=1.0), mult)
            else:
                mult = torch.ones_like(sd)
            xs = [v * scale for v in x]
            hxs = [v * scale for v in holdout_x]
            mult2 = mult.unsqueeze(0).expand(2, -1)
            state = H.new_head(layout.encoded_width, layout.n_bins).state_dict()
            for _ in range(rounds):
                replies = []
                for sx, scodes, plan in zip(xs, codes, plans):
                    head = H.new_head(layout.encoded_width, layout.n_bins); head.load_state_dict(state)
                    dp_round(head, sx, scodes, layout, plan, lr, mult2)
                    replies.append((head.state_dict(), len(sx)))
                tot = sum(n for _, n in replies)
                state = {k: sum(sd_[k] * n for sd_, n in replies) / tot for k in state}
            head = H.new_head(layout.encoded_width, layout.n_bins); head.load_state_dict(state)
            with torch.no_grad():
                risks = [head(hx)[:, -1].numpy() for hx in hxs]
            res[f"c{label}_C"] = round(H.harrell(sites, tc, ec, risks), 4)
            w_orig = head.effects.weight[1].detach() * scale
            inside, mz = errors(w_orig)
            zz = ((w_orig[errors.live] - errors.mle) / errors.se)
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
