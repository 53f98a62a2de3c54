"""The MCM network (seed 000/001): attention filter + MLP blocks with residual, per-column heads.

Design points and why:

* Block 1 is the papers' attention filter: a linear layer scores every input position, masked
  positions get a large *finite* negative score before the softmax (``-inf`` turns a row
  with everything masked into NaN), and the softmax weights the visible features, which an
  MLP then reads. Weights are multiplied by the number of positions so that uniform attention
  leaves the features at their own scale.
* Block 2 is attention without masking over the hidden state, an MLP, and a residual.
* LayerNorm, never BatchNorm: BatchNorm mixes samples in a batch, which breaks per-sample
  gradients and so DP-SGD (Opacus refuses it).
* The output is a distribution per column rather than the papers' point reconstruction, so
  the server can *sample* from the model without copying any real row.
* Optionally (``survival_head``) a low-dimensional model of p(outcome | every covariate),
  learned from every row (see MCMConfig): ``"joint"``, a linear map from the covariates'
  encoding to the joint (event, time bin) logits, or ``"hazard"``, discrete-time competing
  hazards of the event and of censoring with one baseline per time bin and one linear effect
  of the covariates per cause (the shape a Cox model reads, with ~16x fewer noisy weights
  under DP-SGD). Its logits are appended to the heads' so one forward pass serves DP-SGD.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsynth.model.layout import Layout

MASKED_SCORE = -1e9
SURVIVAL_CENTRES = ("midpoint", "marginal", "tables")


class MLP(nn.Module):
    def __init__(self, width_in: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width_in, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, hidden)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HazardHead(nn.Module):
    """Per-bin logits of (censoring, event) hazards: baseline[cause, bin] + effect[cause] . x.

    Output (n, 2 * n_bins), cause-major like the joint head (censoring bins, then event bins).
    The baseline is a bias-free linear layer of a constant input so that Opacus computes its
    per-record gradients like any other layer's.

    The choices that decide whether DP-SGD's few noisy steps learn anything:

    * The covariates come centred (the outcome's inputs are 0): at 0.5, the midpoint of the
      [0, 1] encoding, at the model's own marginal mean, or at fixed means read off the run's DP
      tables (MCMNetwork.survival_centre).
      Uncentred, every encoding is positive, so the effects first move together as a second
      intercept (all hazards too high at the start) and rank rows by the sum of their
      encodings; FLChain's model-only samples then reversed the real risk order (TSTR C 0.32).
    * Optionally (``level``) one intercept per cause at the effects' scale, so the overall
      event and censoring rates move as fast as the effects do (see MCMConfig.survival_level).
    * The baseline starts where the time of the end is uniform over the bins and both causes
      are equally likely, not at hazards of 1/3 per bin (most rows ending in the first bins).
    * The effects are ``effect_scale`` times their weights (see MCMConfig.survival_effect_scale).
    """

    def __init__(self, width_in: int, n_bins: int, effect_scale: float = 1.0, level: bool = False) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.effect_scale = effect_scale
        self.baseline = nn.Linear(1, 2 * n_bins, bias=False)
        self.effects = nn.Linear(width_in, 2, bias=level)  # the bias is the per-cause level
        # P(end in bin k | reached it) = 1 / (bins - k), half per cause: logit log(1 / (2 (bins - k - 1))).
        remaining = torch.arange(n_bins, 0, -1, dtype=torch.float32)
        uniform = -torch.log(2.0 * (remaining - 1.0).clamp_min(0.5))
        with torch.no_grad():
            self.baseline.weight.copy_(torch.cat([uniform, uniform]).unsqueeze(1))
        nn.init.zeros_(self.effects.weight)
        if level:
            nn.init.zeros_(self.effects.bias)

    def forward(self, covariates: torch.Tensor) -> torch.Tensor:
        baseline = self.baseline(torch.ones(len(covariates), 1, dtype=covariates.dtype, device=covariates.device))
        effects = self.effects(covariates) * self.effect_scale
        return baseline + effects.repeat_interleave(self.n_bins, dim=1)


class MCMNetwork(nn.Module):
    """Maps (masked encoding, column mask) to per-column output logits."""

    def __init__(
        self,
        layout: Layout,
        hidden: int = 64,
        survival_head: bool = False,
        survival_form: str = "joint",
        survival_effect_scale: float = 1.0,
        survival_centre: str = "midpoint",
        survival_level: bool = False,
    ) -> None:
        super().__init__()
        self.layout = layout
        width = layout.encoded_width
        self.filter_scores = nn.Linear(layout.input_width, width)
        self.block1 = MLP(width + layout.n_columns, hidden)
        self.attention2 = nn.Linear(hidden, hidden)
        self.block2 = MLP(hidden, hidden)
        self.out_norm = nn.LayerNorm(hidden)
        self.heads = nn.Linear(hidden, layout.output_width)
        self.register_buffer("input_column", layout.input_column.clone(), persistent=False)
        self.survival_head: nn.Module | None = None
        self.survival_form = survival_form if survival_head else None
        if survival_centre not in SURVIVAL_CENTRES:
            raise ValueError(f"survival_centre must be one of {SURVIVAL_CENTRES}, got {survival_centre!r}")
        self.survival_centre = survival_centre
        # Where marginal_encoding reads each kind of head (one gather per kind, not a loop per column).
        numeric_out = [list(range(h.out_start, h.out_stop)) for h in layout.numeric]
        self.register_buffer(
            "numeric_out", torch.tensor(numeric_out, dtype=torch.long).reshape(-1, layout.n_bins), persistent=False
        )
        self.register_buffer(
            "numeric_in", torch.tensor([h.in_start for h in layout.numeric], dtype=torch.long), persistent=False
        )
        self.register_buffer(
            "binary_out", torch.tensor([h.out_start for h in layout.binary], dtype=torch.long), persistent=False
        )
        self.register_buffer(
            "binary_in", torch.tensor([h.in_start for h in layout.binary], dtype=torch.long), persistent=False
        )
        if survival_head:
            outcome = {h.index for h in layout.heads if h.column.role != "feature"}
            covariate_input = torch.tensor([int(c) not in outcome for c in layout.input_column], dtype=torch.float32)
            self.register_buffer("covariate_input", covariate_input, persistent=False)
            if survival_form == "hazard" and survival_centre == "tables":
                # Fixed centres, set once (the coordinator's DP tables, or a plain fit's rows) and
                # carried with the weights, so that the sites and the sampler read the same ones.
                self.register_buffer("survival_centre_values", torch.full((layout.encoded_width,), 0.5))
            if survival_form == "hazard":
                self.survival_head = HazardHead(
                    layout.encoded_width, layout.n_bins, survival_effect_scale, level=survival_level
                )
            elif survival_form == "joint":
                self.survival_head = nn.Linear(layout.encoded_width, 2 * layout.n_bins)
            else:
                raise ValueError(f"survival_form must be 'joint' or 'hazard', got {survival_form!r}")

    def trunk(self, encoded: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Hidden state (n, hidden) from the encoding and a boolean (n, n_columns) mask."""
        input_masked = torch.index_select(masked, 1, self.input_column)
        visible_input = encoded.masked_fill(input_masked, 0.0)
        score_bias = input_masked.to(encoded.dtype) * MASKED_SCORE
        return self.trunk_visible(visible_input, masked.to(encoded.dtype), score_bias)

    def trunk_visible(
        self, visible_input: torch.Tensor, masked_f: torch.Tensor, score_bias: torch.Tensor
    ) -> torch.Tensor:
        """The trunk given what a caller (the sampler) can keep up to date incrementally.

        ``visible_input`` is the encoding with masked positions zeroed, ``masked_f`` the column
        mask as 0/1 floats and ``score_bias`` MASKED_SCORE at masked input positions, 0 elsewhere
        (adding it to a score of magnitude << 1e9 excludes the position from the softmax).
        """
        scores = self.filter_scores(torch.cat([visible_input, masked_f], dim=1)) + score_bias
        weights = torch.softmax(scores, dim=1) * scores.shape[1]
        h1 = self.block1(torch.cat([weights * visible_input, masked_f], dim=1))
        weights2 = torch.softmax(self.attention2(h1), dim=1) * h1.shape[1]
        h2 = h1 + self.block2(weights2 * h1)
        return torch.relu(self.out_norm(h2))

    def forward(self, encoded: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """All heads' logits, (n, output_width), then the survival head's (n, 2 * n_bins) if any."""
        logits = self.heads(self.trunk(encoded, masked))
        if self.survival_head is None:
            return logits
        return torch.cat([logits, self.survival_logits(encoded)], dim=1)

    def survival_logits(self, encoded: torch.Tensor) -> torch.Tensor:
        """(n, 2 * n_bins) logits from the covariates alone, event-major: the joint (event, time bin)
        logits, or the (censoring, event) hazard logits per bin (see ``survival_form``)."""
        assert self.survival_head is not None
        if self.survival_form == "hazard":  # centred covariates: see HazardHead
            return self.survival_head((encoded - self.covariate_centre()) * self.covariate_input)
        return self.survival_head(encoded * self.covariate_input)

    def covariate_centre(self) -> torch.Tensor | float:
        """Where the hazard head centres its covariates (see ``survival_centre``)."""
        if self.survival_centre == "tables":
            return self.survival_centre_values
        return self.marginal_encoding() if self.survival_centre == "marginal" else 0.5

    def marginal_encoding(self) -> torch.Tensor:
        """(encoded_width,) the model's own marginal mean of every encoded position.

        Read from one pass with every column masked: the mean of each numeric head's histogram
        (bin centres), each binary head's probability, each categorical head's probabilities.
        Why: centring the survival head's covariates at their mean keeps each effect from
        doubling as an intercept (a rare binary such as FLChain's mgus, 1.5% ones, sits at
        -0.5 for nearly every row around the midpoint, and under DP-SGD its effect soaked up
        the baseline's error: log-HR -1.2 to -1.6 against a real 95% CI of about [-0.5, 0.7]).
        The real means are private; the model's are a function of its weights alone, so they
        cost no privacy, and need no bookkeeping: the sampler recomputes the same values from
        the same weights. No gradient flows through them (a constant per step for DP-SGD,
        and Opacus's hooks skip a pass without gradients).
        """
        layout = self.layout
        weight = self.heads.weight
        with torch.no_grad():
            visible = torch.zeros(1, layout.encoded_width, dtype=weight.dtype, device=weight.device)
            masked_f = torch.ones(1, layout.n_columns, dtype=weight.dtype, device=weight.device)
            score_bias = torch.full_like(visible, MASKED_SCORE)
            logits = self.heads(self.trunk_visible(visible, masked_f, score_bias))[0]
            centres = (torch.arange(layout.n_bins, dtype=weight.dtype, device=weight.device) + 0.5) / layout.n_bins
            mean = torch.empty(layout.encoded_width, dtype=weight.dtype, device=weight.device)
            mean[self.numeric_in] = torch.softmax(logits[self.numeric_out], dim=1) @ centres
            mean[self.binary_in] = torch.sigmoid(logits[self.binary_out])
            for head in layout.categorical:  # one-hot positions: the category probabilities
                mean[head.in_start : head.in_stop] = torch.softmax(logits[head.out_start : head.out_stop], dim=0)
            return mean

    def head_logits(self, hidden: torch.Tensor, head_index: int) -> torch.Tensor:
        """Logits of one column's head only: the sampler needs one column per step."""
        head = self.layout.heads[head_index]
        weight = self.heads.weight[head.out_start : head.out_stop]
        bias = self.heads.bias[head.out_start : head.out_stop]
        return torch.nn.functional.linear(hidden, weight, bias)
