"""One hospital's side of the federation: validated data, a persistent split, DP rounds.

Everything here runs inside the site. What it hands back to the ClientApp is a
:class:`RoundResult`: the trained weights, the number of training records and scalars about
the privacy spent. No row, row index or per-record value is in it.

The site directory holds the site's durable state:

* ``split.json``: which input rows are the holdout, with a digest of the data. Re-opening
  with changed data is refused rather than re-split: a new split could put earlier
  training rows into the holdout that audits assume was never trained on.
* ``ledger.sqlite``: the append-only privacy ledger (see :mod:`fedsynth.client.ledger`), and
  ``ledger.head.json``, the witness of its hash chain's head.
* ``runs/<run id>/dp_plan.json``: the noise multipliers (DP-SGD and marginal tables) fixed for a
  run at its first round or marginal release, whichever comes first.
* ``runs/<run id>/marginals.json``: the run's noisy marginal tables, released once
  (:mod:`fedsynth.client.marginal_release`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from fedsynth.client.config import SiteConfig
from fedsynth.client.dp_training import DPPlan, marginal_noise_for_share, plan_dp, train_dp_round
from fedsynth.client.ledger import BudgetExceededError, PrivacyLedger, check_delta, default_delta
from fedsynth.client.site_files import PLAN_FILE, RUNS_DIR, SPLIT_FILE, frame_digest, prior_state_files
from fedsynth.data.io import read_table, write_text
from fedsynth.data.minimum import check_dp_training_records
from fedsynth.data.schema import Schema
from fedsynth.data.validation import validate_frame
from fedsynth.errors import UserError
from fedsynth.model.generators import AnyGeneratorConfig, new_generator


class EffectRatesRefusedError(RuntimeError):
    """A round's effect rates are outside the contract; the text names the site and why (no data)."""


class ReceivedWeightsRefusedError(RuntimeError):
    """The coordinator's weights are outside the contract; the text names the site and why (no data)."""


class SiteError(UserError, ValueError):
    """The site cannot take part as configured; the message says why and what to do."""


@dataclass(frozen=True)
class RoundResult:
    """What one training round produces at a site (weights and aggregates only)."""

    state_dict: dict[str, torch.Tensor]
    num_examples: int
    epsilon_spent: float
    target_epsilon: float
    target_delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    train_loss: float


class Site:
    """A site's data, split, ledger and DP-SGD rounds, rooted at ``site_dir``."""

    def __init__(self, config: SiteConfig, schema: Schema, site_dir: str | Path, frame: pd.DataFrame | None = None):
        self.config = config
        self.schema = schema
        self.dir = Path(site_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if frame is None:
            if config.data is None:
                raise SiteError(f"site '{config.name}': no data given; set site.data in the site config")
            frame = read_table(config.data)
        canonical, _ = validate_frame(frame, schema, source=str(config.data or f"site {config.name} data"))
        # Before the split is written (and any spend): a site refused here can add rows and open again.
        check_dp_training_records(
            config.name + (f": {config.data.name}" if config.data else ""),
            len(canonical), config.training.holdout_fraction, config.training.batch_size,
        )  # fmt: skip
        # Looked at before the split below writes split.json: with any of these, the site has
        # worked before, and a missing ledger is refused rather than started afresh at zero.
        prior_state = prior_state_files(self.dir)
        self.train, self.holdout = self._split(canonical)
        n = len(self.train)
        delta = config.privacy.target_delta if config.privacy.target_delta is not None else default_delta(n)
        check_delta(delta, n)
        self.ledger = PrivacyLedger(
            self.dir / "ledger.sqlite",
            target_epsilon=config.privacy.target_epsilon,
            target_delta=delta,
            prior_state=prior_state,
        )

    @property
    def n_train(self) -> int:
        return len(self.train)

    def _split(self, canonical: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Seeded split, persisted on first use and verified against the data afterwards."""
        training = self.config.training
        digest = frame_digest(canonical)
        path = self.dir / SPLIT_FILE
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved["data_sha256"] != digest:
                raise SiteError(
                    f"site '{self.config.name}': the data differ from those split on {saved['created']} "
                    f"({path}). Re-splitting could move trained rows into the holdout. Restore the original "
                    "data, or start a new site directory (and a new privacy ledger) for new data."
                )
            holdout_rows = saved["holdout_rows"]
        else:
            n_holdout = int(round(len(canonical) * training.holdout_fraction))
            if not 0 < n_holdout < len(canonical):
                raise SiteError(
                    f"site '{self.config.name}': {len(canonical)} rows cannot be split with "
                    f"training.holdout_fraction = {training.holdout_fraction}"
                )
            order = torch.randperm(len(canonical), generator=torch.Generator().manual_seed(training.split_seed))
            holdout_rows = sorted(order[:n_holdout].tolist())
            record = {
                "created": pd.Timestamp.now(tz="UTC").isoformat(),
                "data_sha256": digest,
                "n_rows": len(canonical),
                "holdout_fraction": training.holdout_fraction,
                "split_seed": training.split_seed,
                "holdout_rows": holdout_rows,
            }
            write_text(path, json.dumps(record, indent=1) + "\n")
        is_holdout = pd.Series(False, index=canonical.index)
        is_holdout.iloc[holdout_rows] = True
        return canonical[~is_holdout].reset_index(drop=True), canonical[is_holdout].reset_index(drop=True)

    def plan(self, run_id: str, planned_rounds: int, head_slope: bool = False) -> DPPlan:
        """The run's DP plan: made at the run's first round or marginal release, then read back unchanged.

        Every spend is planned at once: the marginal tables' noise from ``privacy.marginals_share``
        of the epsilon left, the end-of-run slope release's (``head_slope``: the run asks for one)
        at ``privacy.head_slope_noise_multiplier``, DP-SGD's from the rest, so that none can
        starve another.
        """
        path = self.dir / RUNS_DIR / run_id / PLAN_FILE
        if path.exists():
            return DPPlan(**json.loads(path.read_text(encoding="utf-8")))
        privacy, training = self.config.privacy, self.config.training
        remaining = self.ledger.remaining_epsilon
        if remaining <= 0:
            raise SiteError(
                f"site '{self.config.name}' has spent its whole budget (epsilon {self.ledger.epsilon():.4f} of "
                f"{privacy.target_epsilon:g}); it cannot join run '{run_id}'"
            )
        marginal_noise = marginal_noise_for_share(privacy.marginals_share, remaining, self.ledger.target_delta)
        slope_noise = privacy.head_slope_noise_multiplier if head_slope else 0.0
        plan = plan_dp(
            n_records=self.n_train,
            batch_size=training.batch_size,
            local_epochs=training.local_epochs,
            planned_rounds=planned_rounds,
            target_epsilon=privacy.target_epsilon,
            target_delta=self.ledger.target_delta,
            max_grad_norm=privacy.max_grad_norm,
            prior_history=self.ledger.history(),  # earlier runs compose with this one
            marginal_noise_multiplier=marginal_noise,
            marginals_share=privacy.marginals_share,
            head_slope_noise_multiplier=slope_noise if slope_noise > 0 else None,
        )
        write_text(path, json.dumps(plan.to_dict(), indent=1) + "\n")
        return plan

    def train_round(
        self,
        global_state: dict[str, torch.Tensor],
        model_config: AnyGeneratorConfig,
        *,
        run_id: str,
        server_round: int,
        planned_rounds: int,
        coordinator_floor: float = 0.0,
        effect_rates: list[float] | None = None,
        head_slope: bool = False,
    ) -> RoundResult:
        """Reserve the round's privacy spend, then run it; refuses (BudgetExceededError) past the budget.

        ``coordinator_floor`` is the largest epsilon the coordinator has recorded for this site in
        the run: a ledger composing to less was reset or rolled back (LedgerIntegrityError).
        ``effect_rates``: the run's step multipliers for the generator's effects, computed by the
        coordinator from the DP marginal tables (checked here before any spend). ``head_slope``:
        the run will ask for the slope release at its end (see :meth:`plan`).
        """
        if coordinator_floor > 0:
            self.ledger.require_at_least(
                coordinator_floor, f"site '{self.config.name}': the coordinator of run '{run_id}'"
            )
        model = new_generator(model_config)
        refusal = model.dp_training_refusal()
        if refusal is not None:  # before any spend
            raise SiteError(f"site '{self.config.name}' cannot train this model: {refusal}")
        plan = self.plan(run_id, planned_rounds, head_slope)
        network = model.build(self.schema)._network()
        try:
            scaled = model.rate_scaled(effect_rates, plan.steps_per_round)
        except ValueError as exc:  # before any spend
            raise EffectRatesRefusedError(
                f"site '{self.config.name}' refused the round's effect rates: {exc}"
            ) from None
        try:  # before any spend: weights that do not fit, or centres outside the encoding
            network.load_state_dict(global_state)
        except RuntimeError as exc:
            raise ReceivedWeightsRefusedError(
                f"site '{self.config.name}' refused the round's weights: they do not fit the model ({exc})"
            ) from None
        refusal = model.received_state_refusal()
        if refusal is not None:
            raise ReceivedWeightsRefusedError(f"site '{self.config.name}' refused the round's weights: {refusal}")
        # Spend is on disk before the first step: a kill from here on can only over-count.
        try:
            epsilon_after = self.ledger.reserve(
                run_id=run_id,
                round=server_round,
                noise_multiplier=plan.noise_multiplier,
                sample_rate=plan.sample_rate,
                steps=plan.steps_per_round,
            )
        except BudgetExceededError as exc:  # the coordinator's record should say which site refused
            raise BudgetExceededError(f"site '{self.config.name}' {exc}") from exc
        seed_text = f"{self.config.training.split_seed}:{run_id}:{server_round}".encode()
        generator = torch.Generator().manual_seed(int(hashlib.sha256(seed_text).hexdigest()[:15], 16))
        loss, history = train_dp_round(
            network,
            model.codes_tensor(self.train),
            model_config,
            plan,
            self.config.training.learning_rate,
            generator,
            server_round=server_round,
            record_loss=model.per_record_loss,
            averaged=model.tail_averaged(),
            scaled=scaled,
        )
        ((noise, rate, steps),) = history
        # Opacus' own accountant may use 1 / int(1 / q) >= q (its step count rounds down): more
        # conservative than the true sampling rate q, which the ledger records. Never less.
        if not (
            math.isclose(noise, plan.noise_multiplier)
            and (math.isclose(rate, plan.sample_rate) or rate > plan.sample_rate)
        ):
            raise RuntimeError(f"Opacus used (noise {noise}, rate {rate}); the ledger reserved {plan}")
        if steps > plan.steps_per_round:
            raise RuntimeError(f"Opacus took {steps} steps; the ledger reserved only {plan.steps_per_round}")
        return RoundResult(
            state_dict={k: v.detach().clone() for k, v in network.state_dict().items()},
            num_examples=self.n_train,
            epsilon_spent=epsilon_after,
            target_epsilon=self.ledger.target_epsilon,
            target_delta=self.ledger.target_delta,
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            steps=plan.steps_per_round,
            train_loss=loss,
        )

    def close(self) -> None:
        self.ledger.close()
