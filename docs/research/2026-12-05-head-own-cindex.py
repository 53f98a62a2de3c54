"""Diagnostic (issue 21): per kept federated run (benchmarks.federated_quality --keep DIR), the
real Cox model's C-index (TRTR) and the global model's own hazard head's C-index, each on every
site's real holdout (mean over sites): how much of the TSTR gap the head itself makes.

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/research/2026-12-05-head-own-cindex.py DIR/actg320-*
"""
import sys, json
from pathlib import Path
import numpy as np, pandas as pd, torch
from lifelines.utils import concordance_index
from fedsynth.model.generators import load_generator
from fedsynth.server.simulation_score import site_tables
from fedsynth.evaluation.utility import fit_cox, cindex_on
out = {}
for run in sys.argv[1:]:
    run = Path(run)
    model = load_generator(run / "model"); schema = model.schema_; net = model.network_
    tables = site_tables(run)
    pooled = pd.concat([t for _, t, _ in tables], ignore_index=True)
    real = fit_cox(pooled, schema)
    trtr = float(np.mean([cindex_on(real, h, schema) for _, _, h in tables]))
    def head_c(h):
        with torch.no_grad():
            risk = net.survival_logits(net.layout.encode_codes(model.codes_tensor(h)))[:, -1].numpy()
        return concordance_index(h[schema.time_column], -risk, h[schema.event_column])
    head = float(np.mean([head_c(h) for _, _, h in tables]))
    out[run.name] = dict(trtr=round(trtr, 4), head=round(head, 4), gap=round(head - trtr, 4))
    print(run.name, out[run.name], flush=True)
g = [v["gap"] for v in out.values()]
print("MEAN head gap", round(float(np.mean(g)), 4), "+-", round(float(np.std(g, ddof=1) / np.sqrt(len(g))), 4), "n", len(g))
