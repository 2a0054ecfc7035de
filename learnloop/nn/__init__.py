"""Blocks written from scratch, with the constructor and forward arguments of their torch.nn twins."""

from learnloop.nn.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNBase", "RNNCell"]
from learnloop.nn.attention import (  # noqa: F401
    KVCache,
    MultiheadAttention,
    look_ahead_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from learnloop.nn.positional import (  # noqa: F401
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)
from learnloop.nn.transformer import (  # noqa: F401
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
