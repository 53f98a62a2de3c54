"""Drawing rows from the Med-VAE's prior.

Rows are decoded from z ~ N(0, I), not from the paper's "condition-specific libraries" of
encoded training rows: such a library is the training rows themselves, kept in the model.
Conditions are honoured by rejection (:mod:`fedsynth.model.decoded`).
"""

from __future__ import annotations

import pandas as pd
import torch

from fedsynth.data.transforms import Transformer
from fedsynth.model.decoded import draw_codes
from fedsynth.model.medvae.network import MedVAENetwork


def decode_rows(network: MedVAENetwork, transformer: Transformer, n: int, generator: torch.Generator) -> pd.DataFrame:
    """``n`` canonical rows decoded from the prior (NaN where a missing = "model" value is drawn missing)."""
    with torch.inference_mode():
        z = torch.randn(n, network.latent, generator=generator)
        codes = draw_codes(network.layout, network.decode(z), generator)
        collapsed = network.layout.collapse(codes)
    return transformer.from_codes(collapsed.double().numpy())
