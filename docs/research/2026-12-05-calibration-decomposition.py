import sys, json, numpy as np, pandas as pd, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
from fedsynth.model.mcm import MCM
from fedsynth.server.simulation_score import site_tables
from fedsynth.evaluation.utility import utility_report
from fedsynth.marginals.calibration import make_consistent, _rake_consistent, systematic_resample, quantile_map
draws = int(sys.argv[1]); runs = [Path(p) for p in sys.argv[2:]]
res = {}
for run in runs:
    model = MCM.load(run / "model"); target = model.calibration_
    spec = target.spec; tables = make_consistent(target.tables, spec)
    sites = site_tables(run); train = pd.concat([t for _, t, _ in sites], ignore_index=True); n = len(train)
    model.calibrate_to(None)
    sampler = model._sampler(n)
    covs = {b.name for b in spec.bins if b.numeric and b.name != spec.time_column}
    for d in range(draws):
        seed = 100 + d
        cand = model.sample(n * target.candidate_multiple, seed=seed)
        rng = np.random.default_rng(seed)
        w = _rake_consistent(cand, tables, spec, conditions=None, skip={spec.event_column}, weight_bound=50.0, sweeps=200, relations=False)
        chosen = rng.permutation(systematic_resample(w, n, rng))
        variants = {}
        mapped = quantile_map(cand, tables, spec, rng, conditions=None, weights=w, chosen=chosen, columns=covs)
        red = sampler.redraw_outcome(mapped, seed)
        variants["A current"] = quantile_map(red, tables, spec, rng, conditions=None, columns={spec.time_column}, time_within_event=False)
        variants["B no time map"] = red
        raked = cand.iloc[chosen].reset_index(drop=True)
        variants["C raked only, redraw"] = sampler.redraw_outcome(raked, seed)
        variants["D raked only, no redraw"] = raked
        variants["E uncalibrated"] = model.sample(n, seed=seed)
        for name, syn in variants.items():
            reps = [utility_report(train, h, syn, model.schema_) for _, _, h in sites]
            r = res.setdefault(name, {"gap": [], "hr": []})
            r["gap"].append(np.mean([x.cindex_tstr - x.cindex_trtr for x in reps])); r["hr"].append(reps[0].hr_in_ci_fraction)
    print(run.name, {k: (round(np.mean(v["gap"]), 3), round(np.mean(v["hr"]), 3)) for k, v in res.items()}, flush=True)
print("FINAL", {k: (round(np.mean(v["gap"]), 3), round(np.std(v["gap"])/np.sqrt(len(v["gap"])), 3), round(np.mean(v["hr"]), 3), round(np.std(v["hr"])/np.sqrt(len(v["hr"])),3)) for k, v in res.items()})
