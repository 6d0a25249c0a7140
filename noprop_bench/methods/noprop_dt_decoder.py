"""NoProp-DT-decoder: NoProp-DT whose blocks end in a nonlinear decoder of the mixed embedding. NOT the
paper's parameterisation (section 5); the "with nonlinear decoder" runs of a public NoProp-DT implementation
(ANKITSANJYAL/NoPropagation), run here on the paper's blocks and objective so the effect of the decoder
alone can be read.

Section 5 makes a block's output a convex mixture of class embeddings; here each block t adds a learned map
D_t (a d x d linear layer and tanh) after it:
  u_hat_t(z_{t-1}, x) = tanh(D_t(softmax(block_t(z_{t-1}, x)) @ W_Embed))
Everything else is NoProp-DT's: Eq. 8 with this u_hat (D_t is trained in pass t with block t), the head,
the schedule, Eq. 3's inference. tanh bounds u_hat to (-1, 1), so the embedding's rows must lie there:
one-hot and dim20 rows do, prototype rows (normalised images) do not and are refused. Block-parallel
training (workers > 1) is NoProp-DT's alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from noprop_bench.methods import catalog
from noprop_bench.methods import equations as eq
from noprop_bench.methods.noprop_dt import DTConfig, NoPropDT


@dataclass
class DTDecoderConfig(DTConfig):
    def validate(self) -> None:
        super().validate()
        if self.embedding == "prototype":
            raise ValueError("noprop-dt-decoder's tanh bounds u_hat to (-1, 1) and cannot reach prototype rows "
                             "(normalised images); use --embeddings one-hot or dim20")
        if self.workers > 1:
            raise ValueError("workers > 1 is block-parallel NoProp-DT's; noprop-dt-decoder trains with workers = 1")


class NoPropDTDecoder(NoPropDT):
    label_embeddings = ("one-hot", "dim20")
    name = "noprop-dt-decoder"
    summary = catalog.summary("noprop-dt-decoder")
    Config = DTDecoderConfig

    def __init__(self, spec, config: DTDecoderConfig, device="cpu", train=None):
        super().__init__(spec, config, device, train)
        d = self.embed.dim
        self.decoders = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.Tanh()) for _ in range(config.timesteps))
        self.to(self.device)

    def denoise(self, t: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """tanh(D_t(softmax(block_t(z_{t-1}, x)) @ W_Embed))."""
        return self.decoders[t - 1](eq.expected_embedding(self.blocks[t - 1](z, x), self.embed.weight))
