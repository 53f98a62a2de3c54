"""Issue 21 diagnostic: the federated model (FEDERATED_MODEL_DEFAULTS) trained without DP on a 50/50 split;
per-covariate log-HRs of its samples (1x and 5x the training size) against the real Cox CIs.

    PYTHONPATH=. OMP_NUM_THREADS=2 python docs/research/2026-12-04-head-without-dp.py flchain 60
"""
import sys, time, numpy as np, pandas as pd
from fedsynth.data.datasets import load_dataset
from fedsynth.data.split import train_holdout_split
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS
from fedsynth.evaluation.utility import utility_report
pd.set_option("display.width", 200)
ds = sys.argv[1]; epochs = int(sys.argv[2])
frame, schema = load_dataset(ds)
train, hold = train_holdout_split(frame, 0.5, seed=0)
t = time.time()
m = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"epochs": epochs, "seed": 0})).fit(train, schema)
print("fit", round(time.time() - t, 1), "s")
for mult in (1, 5):
    syn = m.sample(len(train) * mult, seed=1)
    r = utility_report(train, hold, syn, schema)
    print(mult, "hr_in_ci", round(r.hr_in_ci_fraction, 3), "C tstr", round(r.cindex_tstr, 3), "trtr", round(r.cindex_trtr, 3))
    print(r.hazard_ratios.round(3).to_string())
