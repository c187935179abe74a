"""A character-level GPT: decoder-only, pre-LayerNorm blocks, causal self-attention, GELU MLP, learned
positions (nanoGPT's shape at CPU size). Input: token ids [batch, time]; output: logits [batch, time, vocab].

Channel groups:
  stream       the residual stream: both embeddings, every LayerNorm, every block's attention output
               projection and MLP output layer (writers), q/k/v, the MLP input and the head (readers).
               LayerNorm normalises over it, so it grows by mean-carrying channels (growth/surgery.py)
  b{i}.heads   block i's attention heads: the *number* of heads at a fixed head size (HEAD_SIZE rows of
               q, k and v and columns of the projection per head). Heads, not head size: two new heads
               made identical cancel through the projection's [Z, -Z] columns exactly, whereas pairing
               inside a head would add q.k terms to the scores and change the 1/sqrt(head size) scale
  b{i}.mlp     block i's MLP hidden width

8 heads of 16 rather than 4 of 32: pairing adds heads two at a time, and a quarter of 8 is 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import WidthModel


class Block(nn.Module):
    def __init__(self, model: "GPTChar", i: int):
        super().__init__()
        p, heads, mlp = f"blocks.{i}", f"b{i}.heads", f"b{i}.mlp"
        hs = model.HEAD_SIZE
        self.ln1 = model.layernorm(f"{p}.ln1", "stream")
        self.q = model.linear(f"{p}.q", "stream", heads, out_span=hs)
        self.k = model.linear(f"{p}.k", "stream", heads, out_span=hs)
        self.v = model.linear(f"{p}.v", "stream", heads, out_span=hs)
        self.proj = model.linear(f"{p}.proj", heads, "stream", span=hs)
        self.ln2 = model.layernorm(f"{p}.ln2", "stream")
        self.fc1 = model.linear(f"{p}.fc1", "stream", mlp)
        self.act = model.gelu(f"{p}.act", mlp)
        self.fc2 = model.linear(f"{p}.fc2", mlp, "stream")
        self.head_size = hs

    def attention(self, x):
        b, t, _ = x.shape
        # rows of q/k/v are head-major (head h owns rows h*hs .. h*hs + hs - 1): the heads group's out span
        q, k, v = (f(x).view(b, t, -1, self.head_size).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class GPTChar(WidthModel):
    arch = "gpt_char"
    display_name = "GPT (char)"
    HEAD_SIZE = 16
    LAYERS = 4
    # for a sequence model the "image size" is its context length in tokens
    image_size = 128
    tokens = True
    datasets = ("tinyshakespeare",)
    # nanoGPT's shakespeare_char recipe at CPU size: AdamW, LR 1e-3, beta2 0.99, decoupled weight decay 0.1
    # fp32 for lm_quick: on an AMD EPYC (Zen 4, native bf16 dot products) a step at one thread took 0.79 s in
    # fp32 and 0.89 s in bf16 autocast (batch 32 x 128, under load); a language model's softmax and LayerNorm
    # statistics are also where bf16 costs accuracy
    recipe = {"smoke": {"dataset": "tinyshakespeare", "optimizer": "adamw", "lr": 1e-3, "beta2": 0.99,
                        "weight_decay": 0.1, "train_subset": 64, "test_subset": 32, "batch_size": 16,
                        "eval_batch_size": 32},
              "lm_quick": {"optimizer": "adamw", "lr": 1e-3, "beta2": 0.99, "weight_decay": 0.1,
                           "precision": "fp32", "channels_last": False, "channels_last_align": 0}}

    @classmethod
    def base_widths(cls):
        widths = {"stream": 128}
        for i in range(cls.LAYERS):
            widths[f"b{i}.heads"] = 8
            widths[f"b{i}.mlp"] = 512
        return widths

    @classmethod
    def example_input(cls, batch, size):
        return torch.zeros(batch, size, dtype=torch.long)

    def __init__(self, widths, num_classes=65, image_size=128):
        super().__init__(widths, num_classes)
        self.context = image_size
        self.tok = self.embedding("tok", num_classes, "stream")
        self.pos = self.embedding("pos", image_size, "stream")
        self.blocks = nn.ModuleList([Block(self, i) for i in range(self.LAYERS)])
        self.ln_f = self.layernorm("ln_f", "stream")
        self.classifier = self.linear("classifier", "stream", None)
        self.init_weights()

    # nanoGPT's init (GPT-2's): every weight N(0, 0.02^2), the residual writers' (proj, fc2) N(0, (0.02 / sqrt(2L))^2)
    # so that the stream's variance does not grow with depth; biases 0, LayerNorm gain 1, bias 0. Width-free:
    # the quarter-width start and growth's new weights (fresh_std) use the same stds. Measured at lm_quick, seed 0,
    # one thread: validation 1.830 nats/char (1.845 with another draw of it) against 2.020 with the CNNs' Kaiming
    # fan-in rule and N(0, 1) embeddings (docs/measurements.md)
    INIT_STD = 0.02

    def fresh_std(self, path: str, fan_in: int) -> float:
        return self.INIT_STD / ((2 * self.LAYERS) ** 0.5 if path.endswith((".proj", ".fc2")) else 1.0)

    def init_weights(self) -> None:
        for name, m in self.named_modules():
            if isinstance(m, (nn.Embedding, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, self.fresh_std(name, 0))
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, idx):
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"sequence of {t} tokens is longer than the context ({self.context})")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))  # through forward: hooks see it (MSG)
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.ln_f(x))
