"""Synthetic log-HR of a binary covariate after one site's DP-SGD plan, per training variant.

python docs/research/2026-12-04-binary-effect-shift.py   (about 10 minutes on 2 cores)
The table it prints is in 2026-12-04-exact-matches-and-own-data.md.
"""

import dataclasses

import torch
from lifelines import CoxPHFitter

from fedsynth.client.dp_training import plan_dp, train_dp_round
from fedsynth.data.infer import draft_schema
from fedsynth.model.mcm import MCM
from fedsynth.server.config import FEDERATED_MODEL_DEFAULTS
from tests.test_readme import hospital_extract

frame = hospital_extract(6000).drop(columns=["patient_id", "hospital"]).dropna().reset_index(drop=True)
train = frame.iloc[:1600]  # one of three sites' training rows
schema, _ = draft_schema(frame, time="days", event="died")


def diabetes_log_hr(rows):
    rows = rows.assign(sex=(rows["sex"] == "M").astype(int))
    return round(float(CoxPHFitter().fit(rows, "days", "died").params_["diabetes"]), 3)


plan = plan_dp(n_records=len(train), batch_size=64, local_epochs=5, planned_rounds=3, target_epsilon=4.0,
               target_delta=1 / len(train) ** 1.1, max_grad_norm=10.0)  # fmt: skip
variants = {
    "no noise, no clipping": ({}, dataclasses.replace(plan, noise_multiplier=1e-6, max_grad_norm=1e4)),
    "clipping only (C = 10)": ({}, dataclasses.replace(plan, noise_multiplier=1e-6)),
    "noise only": ({}, dataclasses.replace(plan, max_grad_norm=1e4, noise_multiplier=plan.noise_multiplier * 1e-3)),
    "DP-SGD (default)": ({}, plan),
    "iterate averaging 0.5": ({"iterate_averaging": 0.5}, plan),
    "cosine learning rate": ({"lr_schedule": "cosine"}, plan),
    "effect scale 4": ({"survival_effect_scale": 4.0}, plan),
}
print("real", diabetes_log_hr(train))
for name, (config, site_plan) in variants.items():
    values = []
    for seed in range(4):
        model = MCM(FEDERATED_MODEL_DEFAULTS.model_copy(update={"seed": seed, **config})).build(schema)
        codes, generator = model.codes_tensor(train), torch.Generator().manual_seed(seed)
        for server_round in range(1, site_plan.planned_rounds + 1):
            model.network_.train()
            train_dp_round(model.network_, codes, model.config, site_plan, 0.01, generator, server_round)
        model.network_.eval()
        values.append(diabetes_log_hr(model.sample(len(train), seed=seed + 5)))
    print(name, values, round(sum(values) / len(values), 3))
