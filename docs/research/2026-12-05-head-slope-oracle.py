"""Oracle check: scale the survival head's event effects by s, score TSTR-TRTR and HR-in-CI (1x, 3 draws)."""
import sys, json
from pathlib import Path
import numpy as np, torch
from fedsynth.model.generators import load_generator
from fedsynth.server.simulation_score import site_tables, score_sample

slopes = [float(s) for s in sys.argv[1].split(",")]
out = []
for run in sys.argv[2:]:
    run = Path(run)
    tables = site_tables(run)
    n = sum(len(t) for _, t, _ in tables)
    model = load_generator(run / "model")
    head = model.network_.survival_head
    w0 = head.effects.weight.detach().clone()
    for s in slopes:
        with torch.no_grad():
            head.effects.weight.copy_(w0)
            head.effects.weight[1] *= s
        model._event_offsets = {}
        gaps, hrs = [], []
        for d in range(3):
            syn = model.sample(n, seed=100 + d)
            try:
                sc = score_sample(tables, syn, model.schema_, True)
            except Exception as e:
                print("fail", run.name, s, d, type(e).__name__, flush=True); continue
            gaps.append(sc.cindex_tstr - sc.cindex_trtr); hrs.append(sc.hr_in_ci_fraction)
        rec = dict(run=run.name, s=s, gap=float(np.mean(gaps)), hr=float(np.mean(hrs)))
        print(json.dumps(rec), flush=True)
        out.append(rec)
