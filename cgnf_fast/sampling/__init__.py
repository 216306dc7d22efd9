"""Sampling: new cells around a reference, under target attributes, from a G-VAE + conditional flow.

    import cgnf_fast
    cells = cgnf_fast.sample("best", {"synflow": "+10%", "params": "<=0.8M"}, n=20)
    for c in cells:
        print(c.params, c.predicted, c.nb201)

The modules follow the pipeline of one call:

- :mod:`.model` -- model directories (a G-VAE + the flow trained on it), the pretrained defaults;
- :mod:`.reference` -- the cell to sample around (``"best"`` and friends);
- :mod:`.conditions` -- what is asked (``"+10%"``, ``"<=0.8M"``) and the flow's condition vector;
- :mod:`.rounds` -- noise -> the flow's latents -> decoded, repaired cells
  (:mod:`cgnf_fast.models.decode`);
- :mod:`.sampler` -- the loop of rounds, the filters and the selection: :func:`sample`;
- :mod:`.drawing` -- cells as text and pictures.
"""

from __future__ import annotations

from ..models.decode import decode_logits
from .conditions import COUNT_ATTRIBUTES, FlowConditions, Target, parse_condition, parse_condition_args
from .drawing import cell_text, draw_cells, layered_positions, short_op
from .model import (NoDefaultModelError, SamplingModel, default_model_dir, export_model, load_flow, resolve_model,
                    shipped_spaces)
from .reference import BEST_NB101, BEST_NB101_HASH, BEST_NB201, BEST_NB201_INDEX, resolve_reference
from .rounds import draw_round
from .sampler import (DEFAULT_CHUNK, DEFAULT_OVERSAMPLE, SampledCell, SamplingError, aim_condition, sample,
                      sample_with_info)

__all__ = [
    "BEST_NB101",
    "BEST_NB101_HASH",
    "BEST_NB201",
    "BEST_NB201_INDEX",
    "COUNT_ATTRIBUTES",
    "DEFAULT_CHUNK",
    "DEFAULT_OVERSAMPLE",
    "FlowConditions",
    "NoDefaultModelError",
    "SampledCell",
    "SamplingError",
    "SamplingModel",
    "Target",
    "aim_condition",
    "cell_text",
    "decode_logits",
    "default_model_dir",
    "draw_cells",
    "draw_round",
    "export_model",
    "layered_positions",
    "load_flow",
    "parse_condition",
    "parse_condition_args",
    "resolve_model",
    "resolve_reference",
    "sample",
    "sample_with_info",
    "shipped_spaces",
    "short_op",
]
