"""SigLIP in one file: the vision tower, the text tower and the scoring parameters, for both
architectures of the family. They differ only in the vision embeddings:

    NaFlex (SigLIP 2, model_type "siglip2")  a Linear patch embedding; the learned (G, G) position grid
                                             resized to each image's own grid (resize_position_grid)
    fixed resolution (model_type "siglip")   a PxP convolution over the square image (PatchConv); the
                                             position table added as is (fixed_position_grid)

Everything else (encoder, MAP head, text tower) is shared. Module names mirror the checkpoint's keys
(`vision_model.encoder.layers.3.self_attn.q_proj.weight`), so loading is a near-identity mapping (see
weights.py). Layers come in dependency order.
Shapes: B batch, N patches (padded), T text tokens (64 or 16), D width, H heads, G position-grid side,
P patch side. Both architectures take patchified pixels (B, N, C*P*P), so every backend feeds them alike.
Every backend runs these forwards: torch calls them, onnx exports them, aoti compiles them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sigserve.config import ModelConfig, TextConfig, TowerConfig, VisionConfig


class MLP(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SelfAttention(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        B, N, D = x.shape
        heads = lambda t: t.view(B, N, self.num_heads, -1).transpose(1, 2)  # (B, H, N, D/H)
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        # key_bias (B, 1, 1, N) additive (key_padding_bias): padding patches get weight 0; text has none.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)
        return self.out_proj(y.transpose(1, 2).reshape(B, N, D))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block, shared by both towers."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SelfAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), key_bias)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, key_bias)
        return x


# ---------------------------------------------------------------------------------------------
# Vision tower


def resize_weights(grid: int, size: int) -> torch.Tensor:
    """(size, grid) weights of an antialiased bilinear resize of `grid` samples to `size`
    (half-pixel centres), i.e. F.interpolate(mode="bilinear", align_corners=False, antialias=True)
    along one axis. Written out so that it also runs in exported graphs."""
    scale = grid / size
    support = max(scale, 1.0)  # widened triangle when shrinking: that is the antialiasing
    center = (torch.arange(size, dtype=torch.float32) + 0.5) * scale - 0.5
    source = torch.arange(grid, dtype=torch.float32)
    w = (1 - (source[None, :] - center[:, None]).abs() / support).clamp(min=0)
    return w / w.sum(-1, keepdim=True)


def resize_position_grid(table: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The learned (G*G, D) position table, seen as a (G, G) grid, resized to (rows, cols) -> (rows*cols, D)."""
    G = int(round(table.shape[0] ** 0.5))
    wy, wx = resize_weights(G, rows), resize_weights(G, cols)  # (rows, G), (cols, G)
    # Separable and linear: out[r, c] = sum_ij wy[r, i] wx[c, j] P[i, j]; one matmul over all G*G cells.
    w = (wy[:, None, :, None] * wx[None, :, None, :]).reshape(rows * cols, G * G)
    return (w.to(table.device) @ table.float()).to(table.dtype)


def fixed_position_grid(table: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Fixed resolution: every image has the table's own (G, G) grid, and the table is added as is."""
    G = int(round(table.shape[0] ** 0.5))
    if (rows, cols) != (G, G):
        raise ValueError(f"a fixed-resolution model takes a {G}x{G} grid of patches, not {rows}x{cols}")
    return table


PositionGrid = Callable[[torch.Tensor, int, int], torch.Tensor]  # (table, rows, cols) -> (rows*cols, D)


def position_grid(cfg: VisionConfig) -> PositionGrid:
    """The architecture's position variant; backends call it once per grid (base.PositionCache)."""
    return resize_position_grid if cfg.naflex else fixed_position_grid


class PatchConv(nn.Module):
    """Fixed resolution: the patch embedding is a PxP convolution with stride P over the square image,
    named after torch.nn.Conv2d's parameters, which the checkpoint stores: weight (D, C, P, P), bias (D,).
    It takes the patchified image that NaFlex takes, puts the pixels back in place, and convolves:
    exactly the reference's arithmetic."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_size, self.grid, self.channels = cfg.patch_size, cfg.grid, cfg.num_channels
        self.weight = nn.Parameter(torch.empty(cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.patch_size))
        self.bias = nn.Parameter(torch.empty(cfg.hidden_size))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, G*G, P*P*C) raster order, channels-last in a patch -> (B, G*G, D)."""
        G, P = self.grid, self.patch_size
        rows = patches.reshape(-1, G, G, P, P, self.channels)  # (B, row, col, py, px, C)
        image = rows.permute(0, 5, 1, 3, 2, 4).reshape(-1, self.channels, G * P, G * P)  # (B, C, G*P, G*P)
        return F.conv2d(image, self.weight, self.bias, stride=P).flatten(2).transpose(1, 2)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        # NaFlex: a Linear over each flattened patch; fixed resolution: the convolution (PatchConv)
        self.patch_embedding = nn.Linear(cfg.patch_dim, cfg.hidden_size) if cfg.naflex else PatchConv(cfg)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)  # a (G*G, D) grid

    def forward(self, pixel_values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # pixel_values (B, N, C*P*P) patchified and normalised; positions (B, N, D) or (N, D): the table
        # on each image's grid (position_grid(cfg); callers cache it per grid, padding rows any value)
        return self.patch_embedding(pixel_values) + positions  # (B, N, D)


def key_padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, N) 1 = patch, 0 = padding -> (B, 1, 1, N) additive attention bias: 0, or the dtype's lowest
    value, whose softmax weight is exactly 0. Padding patches are never attended to (as keys)."""
    return (1.0 - attention_mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min


class PoolingAttention(nn.Module):
    """Named after torch.nn.MultiheadAttention's parameters, which the checkpoint stores."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * cfg.hidden_size, cfg.hidden_size))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * cfg.hidden_size))
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, query: torch.Tensor, x: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        B, N, D = x.shape
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        heads = lambda t: t.view(B, t.shape[1], self.num_heads, -1).transpose(1, 2)  # (B, H, L, D/H)
        q = heads(F.linear(query, wq, bq))  # (B, H, 1, D/H)
        k, v = heads(F.linear(x, wk, bk)), heads(F.linear(x, wv, bv))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)  # (B, H, 1, D/H)
        return self.out_proj(y.transpose(1, 2).reshape(B, 1, D))

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """forward's output for each key on its own, (B, N, D) -> (B, N, D): with a single key every
        head gives it weight 1, so the probe and the keys drop out and only the value path is left."""
        _, _, wv = self.in_proj_weight.chunk(3)
        _, _, bv = self.in_proj_bias.chunk(3)
        return self.out_proj(F.linear(x, wv, bv))


class MAPHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over the valid patches."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, cfg.hidden_size))
        self.attention = PoolingAttention(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        h = self.attention(self.probe.expand(x.shape[0], -1, -1), x, key_bias)  # (B, 1, D)
        h = h + self.mlp(self.layernorm(h))  # no LayerNorm before the attention: x is post-LN already
        return h[:, 0]  # (B, D)

    def per_patch(self, x: torch.Tensor) -> torch.Tensor:
        """What forward returns when the probe may attend to one patch only, for every patch at once:
        (B, N, D) -> (B, N, D). Region embeddings in the pooled space (MaskCLIP, for attention pooling)."""
        h = self.attention.values(x)  # (B, N, D)
        return h + self.mlp(self.layernorm(h))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = MAPHead(cfg)

    def forward(self, pixel_values: torch.Tensor, positions: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (B, N, C*P*P) normalised patches, positions (B, N, D) or (N, D), attention_mask
        (B, N) (1 = patch, 0 = padding; None when no image in the batch is padded, so that attention
        runs unmasked: on CUDA that lets SDPA pick flash attention).
        -> pooled (B, D), last_hidden_state (B, N, D); rows beyond each image's grid are padding."""
        x = self.embeddings(pixel_values, positions)
        bias = None if attention_mask is None else key_padding_bias(attention_mask, x.dtype)
        x = self.post_layernorm(self.encoder(x, bias))
        return self.head(x, bias), x


# ---------------------------------------------------------------------------------------------
# Text tower


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:T]  # (B, T, D)


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, cfg.embed_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) right-padded -> pooled (B, D)."""
        return self.pool(self.embeddings(input_ids))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded tokens (B, T, D) -> pooled (B, D). No attention mask, as in training: the pooled
        token is the LAST position, usually a <pad>, and it sees the whole sequence. (The ONNX backend
        exports this half and looks the 256000-row token table up outside the graph.)"""
        x = self.encoder(x)
        return self.head(self.final_layer_norm(x[:, -1]))


# ---------------------------------------------------------------------------------------------


class Siglip2(nn.Module):
    """SigLIP 2 NaFlex, or a fixed-resolution SigLIP / SigLIP 2, as the config says."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.vision_model = VisionTransformer(cfg.vision)
        self.text_model = TextTransformer(cfg.text)
        self.logit_scale = nn.Parameter(torch.zeros(1))  # temperature = exp(logit_scale)
        self.logit_bias = nn.Parameter(torch.zeros(1))  # scores: sigserve.scoring.sigmoid_probabilities
