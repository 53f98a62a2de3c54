"""Per covariate of kept federated runs (benchmarks.federated_quality --keep DIR): the model's
log-HR on samples of 1x and 10x the pooled training size against the pooled real CI, in the real
fit's standard errors (issue 21 diagnostic).

    OMP_NUM_THREADS=2 PYTHONPATH=. python docs/research/2026-12-05-hazard-ratio-z.py DIR/whas500-*
"""
import sys, json
from pathlib import Path
import numpy as np, pandas as pd
from fedsynth.model.generators import load_generator
from fedsynth.server.simulation_score import site_tables
from fedsynth.evaluation.utility import utility_report
rows = []
for run in sys.argv[1:]:
    run = Path(run)
    model = load_generator(run / "model")
    tables = site_tables(run)
    pooled = pd.concat([t for _, t, _ in tables], ignore_index=True)
    n = len(pooled)
    for mult, seed in [(1, 1), (10, 2)]:
        syn = model.sample(n * mult, seed=seed)
        rep = utility_report(pooled, tables[0][2], syn, model.schema_)
        hr = rep.hazard_ratios
        se = (hr.real_upper - hr.real_lower) / 3.92
        for cov, r in hr.iterrows():
            rows.append(dict(run=run.name, mult=mult, cov=cov, real=r.real_log_hr, se=se[cov], syn=r.synthetic_log_hr,
                             z=(r.synthetic_log_hr - r.real_log_hr) / se[cov], inside=bool(r.inside_real_ci)))
df = pd.DataFrame(rows)
pd.set_option("display.width", 200)
print(df[df.mult == 10].pivot(index="cov", columns="run", values="z").round(2))
print(df.groupby(["mult"]).inside.mean())
g = df[df.mult == 10].groupby("cov")
print(pd.DataFrame({"real": g.real.mean(), "se": g.se.mean(), "syn10": g.syn.mean(), "mean_z": g.z.mean(), "inside1x": df[df.mult==1].groupby("cov").inside.mean(), "inside10x": g.inside.mean()}).round(3))
