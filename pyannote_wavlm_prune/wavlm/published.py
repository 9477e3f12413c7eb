"""Published WavLM structures, as `Structure`s of their architectures (random weights).

`REFERENCE_BASE_PLUS_S80`: the released WavLM Base+ structure at 80 % sparsity (DiariZen's
`wavlm_base_s80_md`, METHOD.md section 6), with the real indices of the kept heads.
"""

from __future__ import annotations

from .presets import base_plus_config
from .structure import Structure

REFERENCE_BASE_PLUS_S80 = Structure.from_dict(
    {
        "conv_channels": [90, 161, 173, 181, 351, 155, 137],
        "kept_heads": [[1, 6], [5, 7, 8], [0, 3, 9], [0, 1, 4, 8, 11], [6, 8], [0],
                       [7, 8, 10, 11], [0, 1, 4, 8], [], [], [4, 7], [5]],
        "ffn_widths": [666, 660, 649, 1080, 237, 299, 437, 573, 53, 80, 211, 334],
    },
    base_plus_config(),
)
