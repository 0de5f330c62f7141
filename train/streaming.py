"""Causal streaming layers with explicit state.

Every layer here is *block-causal*: its offline ``forward(x)`` and its streaming
``step(x, state) -> (y, state)`` compute the same signal, sample for sample, when
the stream is cut into blocks that are multiples of the layer's stride.  There is
no hidden buffer and no global streaming switch: the state goes in and comes out
as a flat list of tensors, which is exactly what an ONNX/TensorRT graph with
``state_in_k`` / ``state_out_k`` needs.

Conventions
-----------
* Tensors are ``[batch, channels, time]``.
* ``state_shapes(batch)`` gives the zero-state shapes; they depend only on the
  layer's constructor arguments, so they are derivable from the config.
* ``ratio`` is output rate / input rate (a Fraction): 1/S for a stride-S conv,
  S for an S-times upsampler.
* ``lookahead`` is how many *input* samples past the start of an output sample's
  span the layer must see before it can emit it.  A stride-S block-causal conv
  waits for its whole block of S inputs: lookahead S-1.  Causal stride-1 convs
  and upsamplers have none.  ``chain_lookahead`` turns a chain of these into
  samples at the chain's input rate; a model's algorithmic latency follows.
* ``delay`` is how far a layer's output signal lags its input beyond that, in
  samples at the layer's input rate (a Fraction): the group delay of a causal
  linear-phase filter such as a PQMF bank (``wavae.train.pqmf``).  Plain convs
  learn their own alignment and have none.  ``chain_delay`` adds them up; the
  algorithmic latency counts them too.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = list[Tensor]


class StreamingModule(nn.Module):
    """Base class: offline ``forward`` plus pure streaming ``step``."""

    ratio: Fraction = Fraction(1)
    lookahead: int = 0
    delay: Fraction = Fraction(0)

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return []

    def init_state(self, batch: int = 1, device=None, dtype=torch.float32) -> State:
        return [torch.zeros(s, device=device, dtype=dtype) for s in self.state_shapes(batch)]

    @property
    def n_states(self) -> int:
        return len(self.state_shapes(1))

    @property
    def min_block(self) -> int:
        """Smallest input block (in input samples) this layer can stream."""
        return 1 if self.ratio >= 1 else int(1 / self.ratio)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError


def chain_lookahead(layers: Sequence[StreamingModule]) -> int:
    """Total lookahead of a chain, in samples at the chain's input rate."""
    rate = Fraction(1)  # rate of the current layer's input, relative to the chain input
    total = Fraction(0)
    for layer in layers:
        total += Fraction(layer.lookahead) / rate
        rate *= layer.ratio
    if total.denominator != 1:
        raise ValueError(f"chain lookahead {total} is not a whole number of input samples")
    return int(total)


def chain_delay(layers: Sequence[StreamingModule]) -> Fraction:
    """Total signal delay of a chain, in samples at the chain's input rate."""
    rate = Fraction(1)
    total = Fraction(0)
    for layer in layers:
        total += Fraction(layer.delay) / rate
        rate *= layer.ratio
    return total


def chain_min_block(layers: Sequence[StreamingModule]) -> int:
    """Smallest input block such that every layer in the chain gets whole blocks."""
    need = Fraction(1)
    rate = Fraction(1)
    for layer in layers:
        # this layer needs a multiple of layer.min_block of its own input samples,
        # i.e. min_block / rate chain-input samples
        req = Fraction(layer.min_block) / rate
        need = _lcm_fraction(need, req)
        rate *= layer.ratio
    if need.denominator != 1:
        raise ValueError(f"chain min block {need} is fractional")
    return int(need)


def _lcm_fraction(a: Fraction, b: Fraction) -> Fraction:
    from math import gcd, lcm

    return Fraction(lcm(a.numerator, b.numerator), gcd(a.denominator, b.denominator))


class CausalConv1d(StreamingModule):
    """Block-causal 1-D convolution.

    Output frame ``j`` sees input ``[jS + S - 1 - (k-1)d, jS + S - 1]``: it covers
    its own stride block and looks only backwards from its end.  The left padding
    is ``(k-1)d - (S-1)`` and the streaming state is that many past input samples.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        groups: int = 1,
    ):
        super().__init__()
        reach = (kernel_size - 1) * dilation
        if reach < stride - 1:
            raise ValueError(
                f"kernel {kernel_size} (dilation {dilation}) does not cover stride {stride}"
            )
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
            bias=bias, groups=groups,
        )
        self.stride = stride
        self.padding = reach - (stride - 1)
        self.ratio = Fraction(1, stride)
        self.lookahead = stride - 1

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        if self.padding == 0:
            return []
        return [(batch, self.conv.in_channels, self.padding)]

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.padding, 0)))

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if self.padding == 0:
            return self.conv(x), []
        xp = torch.cat([state[0], x], dim=-1)
        return self.conv(xp), [xp[..., xp.shape[-1] - self.padding :]]


class CausalConvTranspose1d(StreamingModule):
    """Causal transposed convolution (upsampling by ``stride``).

    Input frame ``j`` writes output ``[jS, jS + K)``.  Offline, the tail past the
    last input frame's own block is cut.  Streaming uses the polyphase form of
    the same sums: output block ``j`` (its ``S`` samples) depends on input frames
    ``j - m .. j`` only, ``m = ceil(K / S) - 1``, so the state is the last ``m``
    input frames and a step is one ordinary convolution (kernel ``m + 1``, ``S``
    output channels per output channel, the kernel's phases) whose outputs are
    interleaved into time.  Against carrying the ``K - S`` overlapping output
    samples to the next block, the step needs no split, add or second slice, and
    the exported graph holds a plain Conv, which the runtimes serve better than
    ConvTranspose (docs/benchmarks/speed.md).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool = True):
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel {kernel_size} must be >= stride {stride}")
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.stride = stride
        self.taps = -(-kernel_size // stride)  # input frames one output block depends on
        self.context = self.taps - 1
        self.ratio = Fraction(stride)
        self.lookahead = 0

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        if self.context == 0:
            return []
        return [(batch, self.conv.in_channels, self.context)]

    def _add_bias(self, y: Tensor) -> Tensor:
        if self.conv.bias is None:
            return y
        return y + self.conv.bias.view(1, -1, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose1d(x, self.conv.weight, None, stride=self.stride)
        return self._add_bias(y[..., : x.shape[-1] * self.stride])

    def polyphase_weight(self) -> Tensor:
        """``[out * S, in, m + 1]``: row ``o * S + p``, tap ``j`` is ``W[:, o, p + (m - j) S]``
        (zero past the kernel), so tap ``m`` meets the newest input frame."""
        w = self.conv.weight  # [in, out, K]
        cin, cout, k = w.shape
        s = self.stride
        if self.taps * s > k:  # zeros past the kernel (not F.pad, nor .flip() below: the ONNX
            # exporter writes both with negative-step Slices, which it cannot constant-fold)
            w = torch.cat([w, w.new_zeros(cin, cout, self.taps * s - k)], dim=2)
        w = w.view(cin, cout, self.taps, s)
        w = torch.stack([w[:, :, r] for r in reversed(range(self.taps))], dim=2)  # newest tap last
        return w.permute(1, 3, 0, 2).reshape(cout * s, cin, self.taps)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        n, _, t = x.shape
        xp = torch.cat([state[0], x], dim=-1) if self.context else x
        bias = None if self.conv.bias is None else self.conv.bias.repeat_interleave(self.stride)
        y = F.conv1d(xp, self.polyphase_weight(), bias)  # [N, out * S, T]: phases as channels
        y = y.view(n, -1, self.stride, t).transpose(2, 3).reshape(n, -1, t * self.stride)
        return y, ([xp[..., xp.shape[-1] - self.context :]] if self.context else [])


class Pointwise(StreamingModule):
    """A stateless, per-sample layer (activation, normalisation, 1x1 conv)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.module(x), []


class StreamingSequential(StreamingModule):
    """A chain of streaming layers; its state is the concatenation of theirs."""

    def __init__(self, *layers: StreamingModule):
        super().__init__()
        for layer in layers:
            if not isinstance(layer, StreamingModule):
                raise TypeError(f"{type(layer).__name__} is not a StreamingModule")
        self.layers = nn.ModuleList(layers)
        ratio = Fraction(1)
        for layer in layers:
            ratio *= layer.ratio
        self.ratio = ratio
        self.lookahead = chain_lookahead(layers)
        self.delay = chain_delay(layers)

    @property
    def min_block(self) -> int:
        return chain_min_block(list(self.layers))

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return [s for layer in self.layers for s in layer.state_shapes(batch)]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        out: State = []
        i = 0
        for layer in self.layers:
            n = layer.n_states
            x, s = layer.step(x, state[i : i + n])
            out.extend(s)
            i += n
        return x, out


class Residual(StreamingModule):
    """``y = body(x) + shortcut(x)``; both branches must share rate and delay."""

    def __init__(self, body: StreamingModule, shortcut: StreamingModule | None = None):
        super().__init__()
        shortcut = shortcut if shortcut is not None else Pointwise(nn.Identity())
        if (body.ratio, body.lookahead, body.delay) != (shortcut.ratio, shortcut.lookahead, shortcut.delay):
            raise ValueError("residual branches are not rate- and delay-aligned")
        self.body = body
        self.shortcut = shortcut
        self.ratio = body.ratio
        self.lookahead = body.lookahead
        self.delay = body.delay

    @property
    def min_block(self) -> int:
        from math import lcm

        return lcm(self.body.min_block, self.shortcut.min_block)

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return self.body.state_shapes(batch) + self.shortcut.state_shapes(batch)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        nb = self.body.n_states
        yb, sb = self.body.step(x, state[:nb])
        ys, ss = self.shortcut.step(x, state[nb:])
        return yb + ys, sb + ss


def stream(module: StreamingModule, x: Tensor, block: int) -> Tensor:
    """Run ``module`` over ``x`` block by block from a zero state (tests, reference)."""
    if x.shape[-1] % block:
        raise ValueError(f"length {x.shape[-1]} is not a multiple of block {block}")
    if block % module.min_block:
        raise ValueError(f"block {block} is not a multiple of min block {module.min_block}")
    state = module.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    outs = []
    for start in range(0, x.shape[-1], block):
        y, state = module.step(x[..., start : start + block], state)
        outs.append(y)
    return torch.cat(outs, dim=-1)
