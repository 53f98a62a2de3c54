"""Anonymeter risks at a site: a copy of the training rows is caught, fresh rows are not."""

from __future__ import annotations

import pandas as pd
import pytest

from fedsynth.privacy.anonymeter_audit import (
    AnonymeterSettings,
    anonymeter_audit,
    at_recorded_precision,
    pooled_risk,
    recorded_decimals,
    risk_key,
)

SETTINGS = AnonymeterSettings(n_attacks=150)


@pytest.fixture(scope="module")
def thirds(whas500):
    frame, schema = whas500
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return shuffled[:160], shuffled[160:320], shuffled[320:480], schema


def test_a_copy_of_the_training_rows_is_high_risk_on_every_attack(thirds) -> None:
    train, holdout, _, schema = thirds
    risks = anonymeter_audit(train.copy(), train, holdout, schema, SETTINGS)
    assert [r.attack for r in risks] == [
        "singling-out-univariate", "singling-out-multivariate", "linkability", "inference",
    ]  # fmt: skip
    for risk in risks:
        assert risk.ci[0] > 0.5, risk


def test_fresh_rows_are_low_risk(thirds) -> None:
    train, holdout, fresh, schema = thirds
    risks = {r.attack: r for r in anonymeter_audit(fresh, train, holdout, schema, SETTINGS)}
    assert risks["linkability"].ci[1] < 0.1
    assert risks["singling-out-univariate"].risk < 0.2 and risks["singling-out-multivariate"].risk < 0.2
    assert risks["inference"].risk < 0.3


def test_inference_attacks_every_training_row_when_the_holdout_is_smaller(thirds) -> None:
    # Sites have small holdouts (33 rows in the demo): singling out and linkability are capped at
    # the holdout's size (anonymeter raises otherwise), inference uses every training row.
    train, holdout, fresh, schema = thirds
    risks = {r.attack: r for r in anonymeter_audit(fresh, train, holdout[:40], schema, SETTINGS)}
    assert risks["inference"].n_attacks == 150 and risks["inference"].detail["n_control_attacks"] == 40
    assert risks["linkability"].n_attacks == 40 and risks["linkability"].detail["n_control_attacks"] == 40
    assert risks["inference"].risk < 0.3  # fresh rows: still low risk, on 150 attacks


def test_column_names_with_spaces_and_bad_settings(thirds) -> None:
    train, holdout, fresh, schema = thirds
    renamed = {"age": "age at admission", "hr": "heart rate (bpm)"}
    spaced = schema.model_copy(
        update={"columns": tuple(c.model_copy(update={"name": renamed.get(c.name, c.name)}) for c in schema.columns)}
    )
    risks = anonymeter_audit(
        train.rename(columns=renamed), train.rename(columns=renamed), holdout.rename(columns=renamed), spaced,
        AnonymeterSettings(n_attacks=100, secrets=("heart rate (bpm)",)),
    )  # fmt: skip
    detail = risks[-1].detail
    assert {k: detail[k] for k in ("secret", "regression", "n_control_attacks")} == {
        "secret": "heart rate (bpm)", "regression": True, "n_control_attacks": 100,
    }  # fmt: skip
    assert 0 <= detail["n_control_success"] <= 100 and 0 <= detail["n_success"] <= risks[-1].n_attacks
    assert risks[-1].ci[0] > 0.5
    with pytest.raises(ValueError, match="not in the schema.*'nope'"):
        anonymeter_audit(fresh, train, holdout, schema, AnonymeterSettings(secrets=("nope",)))


def test_synthetic_values_are_compared_at_the_real_datas_recorded_precision() -> None:
    real = pd.DataFrame({"age": [61.0, 70.0, 55.0], "kappa": [1.25, 0.5, 2.75], "code": [1, 2, 3]})
    synthetic = pd.DataFrame({"age": [61.2837, 69.6], "kappa": [1.2549, 0.4999], "code": [1, 2]})
    assert recorded_decimals(real["age"]) == 0 and recorded_decimals(real["kappa"]) == 2
    assert recorded_decimals(pd.Series([1 / 3, 0.5])) is None
    rounded = at_recorded_precision(synthetic, real)
    assert rounded["age"].tolist() == [61.0, 70.0] and rounded["kappa"].tolist() == [1.25, 0.5]
    assert rounded["code"].tolist() == [1, 2] and synthetic["age"].iloc[0] == 61.2837  # input untouched


def _risk_dict(n_attacks: int, n_success: int, n_control: int, n_control_success: int, n_baseline_success: int = 0):
    detail = {"n_baseline_attacks": n_attacks, "n_control_attacks": n_control, "n_success": n_success,
              "n_baseline_success": n_baseline_success, "n_control_success": n_control_success}  # fmt: skip
    return {"attack": "linkability", "n_attacks": n_attacks, "detail": detail}


def test_pooled_risk_is_anonymeters_risk_of_the_summed_counts() -> None:
    from anonymeter.stats.confidence import EvaluationResults

    one = _risk_dict(33, 20, 33, 5)
    alone_value, alone_ci = pooled_risk([one])
    direct = EvaluationResults(n_attacks=(33, 33, 33), n_success=20, n_baseline=0, n_control=5).risk()
    assert alone_value == pytest.approx(direct.value) and alone_ci == pytest.approx(direct.ci)
    # Three sites with the same rates: the same risk, a CI narrower than one site's.
    value, ci = pooled_risk([one, one, one])
    tripled = EvaluationResults(n_attacks=(99, 99, 99), n_success=60, n_baseline=0, n_control=15).risk()
    assert value == pytest.approx(tripled.value) and ci == pytest.approx(tripled.ci)
    assert ci[1] - ci[0] < alone_ci[1] - alone_ci[0]
    # A leaking site and two clean ones: between them, weighted by attacks.
    mixed, _ = pooled_risk([_risk_dict(33, 33, 33, 3), _risk_dict(33, 3, 33, 3), _risk_dict(33, 3, 33, 3)])
    assert pooled_risk([_risk_dict(33, 3, 33, 3)])[0] < mixed < pooled_risk([_risk_dict(33, 33, 33, 3)])[0]


def test_pooled_risk_needs_every_sites_counts() -> None:
    old = {"attack": "linkability", "n_attacks": 33, "detail": {"n_control_attacks": 33}}
    with pytest.raises(ValueError, match="n_success"):
        pooled_risk([_risk_dict(33, 3, 33, 3), old])
    assert risk_key({"attack": "inference", "detail": {"secret": "age"}}) == "inference:age"


def test_missing_values_run_every_attack_and_a_copy_is_still_caught(whas500) -> None:
    from tests.missing import blank

    frame, schema = blank(*whas500, {"bmi": 0.3, "cvd": 0.3}, seed=0)
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, holdout, fresh = shuffled[:160], shuffled[160:320], shuffled[320:480]
    copied = {r.attack: r for r in anonymeter_audit(train.copy(), train, holdout, schema, SETTINGS)}
    assert all(r.ci[0] > 0.5 for r in copied.values()), copied
    risks = {r.attack: r for r in anonymeter_audit(fresh, train, holdout, schema, SETTINGS)}
    # Anonymeter draws its targets at random: here an independent sample's inference risk read
    # 0.11-0.23 over 12 runs (a point estimate under 0.2 failed a quarter of them), the lower end
    # of its 95% interval 0.0 each time; a copy's lower end is above 0.5 (asserted above).
    assert risks["linkability"].risk < 0.2 and risks["inference"].ci[0] < 0.2
