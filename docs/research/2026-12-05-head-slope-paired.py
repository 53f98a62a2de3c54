"""Paired: the same trained model unscaled (slope 1), with the published slope, and with the slope the
moment solver gets from the same DP release; protocol scores on 3 draws each."""
import sys, json, copy
from pathlib import Path
import numpy as np, torch
from fedsynth.model.generators import load_generator
from fedsynth.model.head_slope import scale_event_effects, solve_slope
from fedsynth.server.head_slope import model_rows
from fedsynth.server.run import RunDirectory
from fedsynth.server.simulation_score import site_tables, score_sample

draws = int(sys.argv[1])
for run in sys.argv[2:]:
    run = Path(run)
    doc = json.loads((run / "head_slope.json").read_text())
    tables = site_tables(run)
    n = sum(len(t) for _, t, _ in tables)
    target = RunDirectory(run).marginal_target()
    trained = doc["round"] - 10000 if doc["round"] > 10000 else doc["round"] - 1
    base = load_generator(run / "checkpoints" / f"round-{trained:04d}").calibrate_to(target)
    moment = solve_slope(doc["score"], base.network_, model_rows(base), doc["num_examples"], doc.get("event_offset", 0.0))
    out = {"run": run.name, "published": doc["slope"], "moment": moment}
    for label, s in (("one", 1.0), ("published", doc["slope"]), ("moment", moment)):
        if label == "moment" and abs(moment - doc["slope"]) < 1e-9:
            out["moment_gap"], out["moment_hr"] = out["published_gap"], out["published_hr"]
            continue
        model = copy.deepcopy(base)
        scale_event_effects(model.network_, s)
        model._event_offsets = {}
        gaps, hrs = [], []
        for d in range(draws):
            try:
                sc = score_sample(tables, model.sample(n, seed=100 + d), model.schema_, True)
            except Exception as exc:
                continue
            gaps.append(sc.cindex_tstr - sc.cindex_trtr); hrs.append(sc.hr_in_ci_fraction)
        out[f"{label}_gap"], out[f"{label}_hr"] = float(np.mean(gaps)), float(np.mean(hrs))
    print(json.dumps(out), flush=True)
