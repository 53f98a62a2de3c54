"""How a schema's columns map onto the network's inputs and output heads.

Inputs: the [0, 1] encoding of every column (one-hot for categoricals), zeroed where a
column is masked, followed by one mask flag per column. Outputs: one distribution per
column: ``n_bins`` logits for numeric columns (a histogram over [0, 1]), one Bernoulli
logit for binary columns, one logit per category for categorical columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsynth.data.schema import Column, ColumnKind, Schema


@dataclass(frozen=True)
class HeadSpec:
    """One column's place in the input encoding and in the output logits."""

    index: int
    column: Column
    in_start: int
    in_stop: int
    out_start: int
    out_stop: int

    @property
    def kind(self) -> ColumnKind:
        return self.column.kind

    @property
    def n_outcomes(self) -> int:
        """Number of discrete outcomes of the head (bins, 2 for binary, categories)."""
        return 2 if self.kind == ColumnKind.BINARY else self.out_stop - self.out_start


class Layout:
    """Index bookkeeping shared by the network, the loss and the sampler."""

    def __init__(self, schema: Schema, n_bins: int) -> None:
        self.schema = schema
        self.n_bins = n_bins
        heads: list[HeadSpec] = []
        in_pos = out_pos = 0
        for index, column in enumerate(schema.columns):
            in_width = column.width
            out_width = n_bins if column.is_numeric else 1 if column.kind == ColumnKind.BINARY else in_width
            heads.append(HeadSpec(index, column, in_pos, in_pos + in_width, out_pos, out_pos + out_width))
            in_pos += in_width
            out_pos += out_width
        self.heads: tuple[HeadSpec, ...] = tuple(heads)
        self.n_columns = len(heads)
        self.encoded_width = in_pos
        self.output_width = out_pos
        # Column index of every encoded input position: expands column masks to input masks.
        self.input_column = torch.tensor(
            [h.index for h in heads for _ in range(h.in_stop - h.in_start)], dtype=torch.long
        )
        self.numeric = [h for h in heads if h.column.is_numeric]
        self.binary = [h for h in heads if h.kind == ColumnKind.BINARY]
        self.categorical = [h for h in heads if h.kind == ColumnKind.CATEGORICAL]

    @property
    def input_width(self) -> int:
        return self.encoded_width + self.n_columns

    def encode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(n, n_columns) codes -> (n, encoded_width) [0, 1] encoding (unmasked)."""
        parts = []
        for head in self.heads:
            value = codes[:, head.index]
            if head.kind == ColumnKind.CATEGORICAL:
                parts.append(torch.nn.functional.one_hot(value.long(), head.in_stop - head.in_start).to(codes.dtype))
            else:
                parts.append(value.unsqueeze(1))
        return torch.cat(parts, dim=1)

    def bin_index(self, unit: torch.Tensor) -> torch.Tensor:
        """Bin of a [0, 1] value (1.0 falls in the last bin)."""
        return torch.clamp((unit * self.n_bins).long(), 0, self.n_bins - 1)
