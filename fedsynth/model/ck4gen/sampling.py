"""Drawing CK4Gen rows: covariates decoded from a latent point, then the outcome.

``outcome = "model"``: the latent point is drawn from the prior N(0, I) and (time, event) from
the distilled Cox model given the decoded covariates (:mod:`~fedsynth.model.ck4gen.outcome`).
``outcome = "copy"`` (the paper's generation): a stored training row is picked, its latent mean
decoded, and its own time and event copied. Conditions are honoured by drawing rows and keeping
those that satisfy them (:func:`fedsynth.model.decoded.accepted_rows`).
"""

from __future__ import annotations

import pandas as pd
import torch

from fedsynth.data.transforms import Transformer
from fedsynth.model.ck4gen.network import CK4GenNetwork
from fedsynth.model.ck4gen.outcome import draw_outcome
from fedsynth.model.ck4gen.teacher import outcome_indices
from fedsynth.model.decoded import draw_codes


def decode_rows(
    network: CK4GenNetwork, transformer: Transformer, copy: bool, n: int, generator: torch.Generator
) -> pd.DataFrame:
    """``n`` canonical rows; ``copy`` takes latent points and outcomes from the library."""
    layout = network.layout
    time_index, event_index = outcome_indices(layout)
    with torch.inference_mode():
        if copy:
            source = torch.randint(len(network.library_latent), (n,), generator=generator)
            z = network.library_latent[source]
        else:
            z = torch.randn(n, network.latent, generator=generator)
        codes = draw_codes(layout, network.decode(z), generator)
        if copy:
            codes[:, time_index] = 0.0  # replaced below by the source row's exact time
            codes[:, event_index] = network.library_event[source]
        else:
            unit_time, event = draw_outcome(
                network.teacher_eta(codes),
                network.event_rates,
                network.censor_rates,
                int(network.last_bin),
                generator,
            )
            codes[:, time_index], codes[:, event_index] = unit_time, event
        frame = transformer.from_codes(layout.collapse(codes).double().numpy())
    if copy:
        name = layout.heads[time_index].column.name
        frame[name] = network.library_time[source].numpy().astype(frame[name].dtype)
    return frame


def redraw_outcome(
    network: CK4GenNetwork, transformer: Transformer, frame: pd.DataFrame, generator: torch.Generator
) -> pd.DataFrame:
    """``frame``'s rows with their (time, event) drawn again from the distilled Cox model given
    their covariates (calibrated sampling: the covariates were re-weighted, the outcome follows)."""
    layout = network.layout
    time_index, event_index = outcome_indices(layout)
    with torch.inference_mode():
        codes = layout.expand(torch.tensor(transformer.codes(frame), dtype=torch.float32))
        unit_time, event = draw_outcome(
            network.teacher_eta(codes), network.event_rates, network.censor_rates, int(network.last_bin), generator
        )
        codes[:, time_index], codes[:, event_index] = unit_time, event
        redrawn = transformer.from_codes(layout.collapse(codes).double().numpy())
    out = frame.copy()
    for index in (time_index, event_index):
        name = layout.heads[index].column.name
        out[name] = redrawn[name].to_numpy()
    return out
