"""Clipping bias of a binary covariate's effect: one site's DP-SGD plan, variants of clip norm and head scale.

PYTHONPATH=. OMP_NUM_THREADS=1 python docs/research/2026-12-04-clipping-bias.py VARIANT[,VARIANT..] FIRST_SEED END_SEED
(about 20 s per run on one core). Each run prints one JSON line; the table is in
2026-12-04-clipping-bias.md. Same site as 2026-12-04-binary-effect-shift.py (1,600 training rows of
tests.test_readme.hospital_extract(6000), epsilon 4, 3 rounds of the site's plan), scored on 10,000
synthetic rows: Cox log-HRs against the real 95% CIs, and Harrell's C on 1,600 held-out real rows.
"""

import dataclasses
import json
import sys

import numpy as np
import torch
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

import fedsynth.client.dp_training as dp_training
from fedsynth.client.dp_training import plan_dp, train_dp_round
from fedsynth.data.infer import draft_schema
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS
from tests.test_readme import hospital_extract

torch.set_num_threads(1)
frame = hospital_extract(6000).drop(columns=["patient_id", "hospital"]).dropna().reset_index(drop=True)
schema, _ = draft_schema(frame, time="days", event="died")
orig_train = frame.iloc[:1600]
frame = frame.assign(sex=(frame["sex"] == "M").astype(int))
train, hold = frame.iloc[:1600], frame.iloc[1600:3200]


def fit(rows):
    return CoxPHFitter().fit(rows, "days", "died")


real = fit(train)
ci = real.confidence_intervals_


def score(cph):
    c = concordance_index(hold["days"], -cph.predict_partial_hazard(hold), hold["died"])
    p = cph.params_
    inci = [float(ci.loc[k].iloc[0] <= p[k] <= ci.loc[k].iloc[1]) for k in p.index]
    return round(c, 4), round(float(np.mean(inci)), 3), {k: round(float(v), 3) for k, v in p.items()}


print("real", score(real), flush=True)
base = plan_dp(
    n_records=len(train),
    batch_size=64,
    local_epochs=5,
    planned_rounds=3,
    target_epsilon=4.0,
    target_delta=1 / len(train) ** 1.1,
    max_grad_norm=10.0,
)
V = {
    "default": ({}, {}),
    "clean": ({}, {"noise_multiplier": 1e-6, "max_grad_norm": 1e4}),
    "scale4": ({"survival_effect_scale": 4.0}, {}),
    "scale2": ({"survival_effect_scale": 2.0}, {}),
    "C20": ({}, {"max_grad_norm": 20.0}),
    "avg": ({"iterate_averaging": 0.5}, {}),
    "scale4_avg": ({"survival_effect_scale": 4.0, "iterate_averaging": 0.5}, {}),
    "C40": ({}, {"max_grad_norm": 40.0}),
    "C20_avg": ({"iterate_averaging": 0.5}, {"max_grad_norm": 20.0}),
    "scale4_speed2": ({"survival_effect_scale": 4.0, "_speed": 2.0}, {}),
    "scale2_speed4": ({"survival_effect_scale": 2.0, "_speed": 4.0}, {}),
    "scale2_avg": ({"survival_effect_scale": 2.0, "iterate_averaging": 0.5}, {}),
}
planned_speed_up = dp_training.effect_speed_up
for name in sys.argv[1].split(","):
    config, p = dict(V[name][0]), V[name][1]
    speed = config.pop("_speed", None)  # the effects' learning rate, times the site's
    dp_training.effect_speed_up = (lambda c, n, s=speed: s) if speed else planned_speed_up
    plan = dataclasses.replace(base, **p)
    for seed in range(int(sys.argv[2]), int(sys.argv[3])):
        model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"seed": seed, **config})).build(schema)
        torch.manual_seed(1000 + seed)
        codes, generator = model.codes_tensor(orig_train), torch.Generator().manual_seed(seed)
        for r in range(1, plan.planned_rounds + 1):
            model.network_.train()
            train_dp_round(model.network_, codes, model.config, plan, 0.01, generator, r)
        model.network_.eval()
        s = model.sample(10000, seed=seed + 5)
        s = s.assign(sex=(s["sex"] == "M").astype(int))
        c, inci, hr = score(fit(s))
        print(json.dumps({"variant": name, "seed": seed, "c": c, "inci": inci, "hr": hr}), flush=True)
