"""Self-attention over a subset of its heads (the pruned models' attention).

Stock `transformers.WavLMAttention` cannot run with fewer heads: it calls
`F.multi_head_attention_forward` with full-size projections and splits the gate input into
`num_heads` chunks. This module keeps the original head size and relative position bias,
attends over the kept heads only with `F.scaled_dot_product_attention`, and has the stock
call signature and return value, so that stock `WavLMEncoderLayer`s run it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.wavlm.modeling_wavlm import WavLMAttention


class OutputBias(nn.Module):
    """What remains of a Linear layer without any input: its bias, as a constant output

    Keeps the stock parameter name (`<linear>.bias`) in state dicts.
    """

    def __init__(self, out_features: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_features))

    def expand(self, like: torch.Tensor) -> torch.Tensor:
        """The bias broadcast to `like`'s leading dimensions

        like (Tensor): shape (batch, frames, any)
        returns (Tensor): shape (batch, frames, out_features)
        """
        # a copy, not a view: a view of a parameter made under no_grad confuses autograd hooks
        return self.bias.repeat(*like.shape[:-1], 1)


def checked_heads(embed_dim: int, num_heads: int, kept_heads: Sequence[int],
                  has_output: bool) -> list[int]:
    """`kept_heads` as a list of ints, or a ValueError naming what is wrong with them."""
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not a multiple of num_heads={num_heads}.")
    kept_heads = [int(head) for head in kept_heads]
    if any(not 0 <= head < num_heads for head in kept_heads) or len(set(kept_heads)) != len(
        kept_heads
    ):
        raise ValueError(
            f"kept_heads={kept_heads}: expected distinct head indices in [0, {num_heads - 1}]."
        )
    if kept_heads and not has_output:
        raise ValueError(f"kept_heads={kept_heads}: a removed block (has_output=False) "
                         "keeps no head.")
    return kept_heads


class PrunedSelfAttention(nn.Module):
    """Multi-head self-attention (wav2vec 2.0, HuBERT) restricted to `kept_heads`

    Stock `Wav2Vec2Attention` / `HubertAttention` derive their head size from the width of
    their projections, so they cannot run fewer heads of the original size. This module keeps
    the original head size E / H, attends over the kept heads with
    `F.scaled_dot_product_attention` (scale (E / H) ** -0.5, as the stock modules), and has the
    stock call signature and return value (output, None), so that stock encoder layers run
    it unchanged. Parameter names are the stock ones (q_proj, k_proj, v_proj, out_proj).

    Parameters
    ----------
    embed_dim : int
        Transformer width E (never pruned).
    num_heads : int
        Number of heads H of the original layer.
    kept_heads : sequence of int
        Indices of the kept heads in the original layer (only their number matters here: the
        projections hold the kept heads' rows). May be empty: the output is then the constant
        out_proj bias.
    dropout : float, optional
        Dropout on the attention weights (train mode). Defaults to 0.
    has_output : bool, optional
        False for a removed attention block: no parameter, zero output.
    """

    def __init__(self, embed_dim: int, num_heads: int, kept_heads: Sequence[int],
                 dropout: float = 0.0, has_output: bool = True):
        super().__init__()
        kept_heads = checked_heads(embed_dim, num_heads, kept_heads, has_output)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kept_heads = kept_heads
        self.has_output = has_output
        self.dropout = dropout
        width = len(kept_heads) * self.head_dim
        if kept_heads:
            self.q_proj = nn.Linear(embed_dim, width)
            self.k_proj = nn.Linear(embed_dim, width)
            self.v_proj = nn.Linear(embed_dim, width)
            self.out_proj = nn.Linear(width, embed_dim)
        elif has_output:
            self.out_proj = OutputBias(embed_dim)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"kept_heads={self.kept_heads}, has_output={self.has_output}")

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> tuple[torch.Tensor, None]:
        """Attention output and no weights

        hidden_states (Tensor): shape (batch, frames, embed_dim)
        returns: output (Tensor) of shape (batch, frames, embed_dim) (a 0-d zero for a removed
            block), None
        """
        if attention_mask is not None:
            raise ValueError("PrunedSelfAttention does not support attention_mask (padding): "
                             "the front end processes equal-length chunks.")
        if not self.has_output:
            return hidden_states.new_zeros(()), None
        if not self.kept_heads:
            return self.out_proj.expand(hidden_states), None
        return self.attend(hidden_states), None

    def attend(self, hidden_states: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """out_proj of the kept heads' attention, with an additive `bias` on the scores

        hidden_states (Tensor): shape (batch, frames, embed_dim); at least one kept head
        bias (Tensor, optional): broadcastable to (batch, kept heads, frames, frames)
        returns (Tensor): shape (batch, frames, embed_dim)
        """
        batch_size, num_frames, _ = hidden_states.shape
        num_kept = len(self.kept_heads)

        def heads(projection: nn.Linear) -> torch.Tensor:
            x = projection(hidden_states).view(batch_size, num_frames, num_kept, self.head_dim)
            return x.transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(self.q_proj), heads(self.k_proj), heads(self.v_proj),
            attn_mask=None if bias is None else bias.to(hidden_states.dtype),
            dropout_p=self.dropout if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(batch_size, num_frames, num_kept * self.head_dim)
        return self.out_proj(context)


class PrunedWavLMAttention(PrunedSelfAttention):
    """WavLM's gated-relative-position self-attention restricted to `kept_heads`

    `PrunedSelfAttention` with WavLM's relative position bias, gated per head, added to the
    scores.

    Parameters
    ----------
    embed_dim : int
        Transformer width E (never pruned).
    num_heads : int
        Number of heads H of the original layer: head size is E / H, the position table has
        H columns and the gate input is split into H chunks.
    kept_heads : sequence of int
        Indices (in the original layer) of the heads this module computes. May be empty: the
        output is then the constant out_proj bias.
    dropout : float, optional
        Dropout on the attention weights (train mode). Defaults to 0.
    num_buckets, max_distance : int, optional
        Relative position bucketing of WavLM. Default to 320 and 800.
    has_relative_position_bias : bool, optional
        Whether this module owns the relative position table (layer 0), whatever its heads.
    has_output : bool, optional
        False for a removed attention block: no parameter but the table, zero output.

    Position bias
    -------------
    Layer 0 computes the (H, T, T) ungated table bias for all original heads and every layer
    passes it on. This differs from stock modules (batch-repeated (B * H, T, T)): a front end
    runs either only stock attention modules or only these.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kept_heads: Sequence[int],
        dropout: float = 0.0,
        num_buckets: int = 320,
        max_distance: int = 800,
        has_relative_position_bias: bool = False,
        has_output: bool = True,
    ):
        super().__init__(embed_dim, num_heads, kept_heads, dropout=dropout, has_output=has_output)
        kept_heads = self.kept_heads
        self.all_heads = kept_heads == list(range(num_heads))  # no head selection needed
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        # for indexing on the right device; derived from kept_heads, not saved
        self.register_buffer("kept_index", torch.tensor(kept_heads, dtype=torch.long),
                             persistent=False)
        if kept_heads:
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, len(kept_heads), 1, 1))
            self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)

        # the table is shared by every layer: it outlives layer 0's heads
        self.rel_attn_embed = (
            nn.Embedding(num_buckets, num_heads) if has_relative_position_bias else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        index: int = 0,
        **kwargs,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        """Attention output, no weights, and the (ungated) position bias for the next layer

        hidden_states (Tensor): shape (batch, frames, embed_dim)
        position_bias (Tensor, optional): shape (num_heads, frames, frames); None in layer 0
        returns: output (Tensor) of shape (batch, frames, embed_dim) (a 0-d zero for a removed
            block), None, position_bias (Tensor) of shape (num_heads, frames, frames)
        """
        if attention_mask is not None:
            raise ValueError("PrunedWavLMAttention does not support attention_mask (padding): "
                             "the front end processes equal-length chunks.")
        batch_size, num_frames, _ = hidden_states.shape
        if position_bias is None:
            if self.rel_attn_embed is None:
                raise ValueError("position_bias is None but this layer has no relative position "
                                 "table: only layer 0 can start the encoder.")
            position_bias = self.compute_bias(num_frames, num_frames)

        if not self.has_output:
            return hidden_states.new_zeros(()), None, position_bias
        if not self.kept_heads:
            return self.out_proj.expand(hidden_states), None, position_bias

        num_kept, head_dim = len(self.kept_heads), self.head_dim

        # gate of the relative position bias: computed from the layer input split into the
        # original H chunks, of which the kept heads' chunks are selected
        chunks = hidden_states.reshape(batch_size, num_frames, self.num_heads, head_dim)
        if not self.all_heads:
            chunks = chunks.index_select(2, self.kept_index)
            position_bias_of_kept = position_bias.index_select(0, self.kept_index)
        else:
            position_bias_of_kept = position_bias
        projected = self.gru_rel_pos_linear(chunks.transpose(1, 2))
        projected = projected.view(batch_size, num_kept, num_frames, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(projected).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
        # (batch, heads, frames, 1) * (heads, frames, frames)
        gated_bias = gate * position_bias_of_kept

        return self.attend(hidden_states, gated_bias), None, position_bias

    def compute_bias(self, query_length: int, key_length: int) -> torch.Tensor:
        """Ungated relative position bias of every original head (WavLM's own bucketing)

        returns (Tensor): shape (num_heads, query_length, key_length)
        """
        return WavLMAttention.compute_bias(self, query_length, key_length)

    def _relative_positions_bucket(self, relative_positions: torch.Tensor) -> torch.Tensor:
        return WavLMAttention._relative_positions_bucket(self, relative_positions)
