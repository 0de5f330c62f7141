"""Structured channel pruning of the VAE and the MelGAN, with distillation.

Channels are really removed: every pruned convolution, transposed convolution and
batch norm is replaced by a smaller module, so the exported graphs shrink and the
multiply-accumulates drop (see ``wavae.train.macs``).

Channel groups
--------------
A *channel group* is a set of channels that must be pruned together: the output
channels of its *producers* (convs writing them), the features of the batch
norms between, and the input channels of its *consumers* (convs reading them).

* Encoder and decoder: each hidden conv output is a group (conv -> BatchNorm ->
  LeakyReLU -> next conv).  The encoder's mean/log-variance outputs, the
  decoder's mel output and both their inputs (mel, latent + loudness) are never
  pruned.
* MelGAN generator: ``vocoder.pre`` is the first conv's output (its n_mels input
  is fixed).  Residual blocks ``y = body(x) + shortcut(x)`` tie their output to
  their input, so the upsampler output and every block of the following stack
  share one set, ``vocoder.stack{k}``; its producers are the upsampler, each
  body's last conv and each shortcut conv, and its consumers each body's first
  conv, each shortcut and the next upsampler (or the final conv).  The hidden
  channels of each body, ``vocoder.stack{k}.block{j}``, are free.  The final
  conv's single output is never pruned.

Criterion
---------
A channel's importance is the L1 norm of its *effective* output filter: the
weight-norm-baked conv weight, times ``|gamma| / sqrt(var + eps)`` of the batch
norm that follows, when there is one (the batch norm rescales the filter, so the
raw conv filter's norm alone would say nothing).  In a tied group each
producer's norms are divided by their mean before summing, so every tied layer
has the same say whatever its weight scale.

When a dropped channel feeds a plain convolution through per-channel ops only
(batch norm, LeakyReLU), its remaining output, the bias pushed through those
ops, is a constant; it is folded into the consumer's bias.  Pruning then
approximates "this filter is zero" rather than "this channel is missing".

Rebuilding a pruned run
-----------------------
``widths_of(model)`` gives ``{group name: channels}``; a run stores it as
``ckpt["pruned_widths"]``.  ``apply_widths(build_model(cfg), widths)`` shrinks a
freshly built model to those widths (weight norm removed, as in a pruned model),
after which ``load_state_dict`` fits the pruned checkpoint exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavae.progress import Progress
from wavae.train.losses import default_ffts, multires_stft_loss
from wavae.train.macs import count_macs, count_params
from wavae.train.melgan import remove_weight_norm
from wavae.train.model import Wavae
from wavae.train.streaming import Pointwise
from wavae.train.widths import (  # noqa: F401  (apply_widths, widths_of: part of this module's API)
    ChannelGroup,
    Conv,
    PruneError,
    apply_widths,
    channel_groups,
    widths_of,
    _shrink,
)


# ---------------------------------------------------------------------------
# criterion
# ---------------------------------------------------------------------------
def _filter_l1(layer: Conv) -> Tensor:
    w = layer.conv.weight.detach().abs()
    if isinstance(layer.conv, nn.ConvTranspose1d):
        return w.sum(dim=(0, 2))
    return w.sum(dim=(1, 2))


def _bn_scale(p: Pointwise) -> Tensor:
    bn: nn.BatchNorm1d = p.module
    var = bn.running_var if bn.track_running_stats else torch.ones(bn.num_features)
    gamma = bn.weight.detach().abs() if bn.affine else torch.ones_like(var)
    return gamma / torch.sqrt(var + bn.eps)


def channel_importance(group: ChannelGroup) -> Tensor:
    """Summed, per-layer-normalised L1 of the effective output filters of a group."""
    total = torch.zeros(group.size, dtype=torch.float64)
    for p in group.producers:
        l1 = _filter_l1(p).double().cpu()
        if len(group.producers) == 1:
            for n in group.norms:
                l1 = l1 * _bn_scale(n).double().cpu()
        total += l1 / l1.mean().clamp_min(1e-12)
    return total


def kept_width(size: int, ratio: float) -> int:
    return max(1, int(round(size * (1.0 - ratio))))


def prune_model(model: Wavae, ratio: float, fold_dropped: bool = True) -> Wavae:
    """A new model with ``ratio`` of each prunable channel group removed.

    The input model is untouched.  The result has no weight norm; its widths are
    ``widths_of(result)``.
    """
    if not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise PruneError(f"pruning ratio must be in [0, 1), got {ratio!r}")
    pruned = copy.deepcopy(model)
    remove_weight_norm(pruned)
    keeps = {}
    for g in channel_groups(pruned):
        score = channel_importance(g)
        k = kept_width(g.size, ratio)
        keeps[g.name] = torch.sort(torch.topk(score, k).indices).values
    _shrink(pruned, keeps, fold_dropped=fold_dropped)
    return pruned.train(model.training)


# ---------------------------------------------------------------------------
# distillation fine-tune
# ---------------------------------------------------------------------------
def _forward_parts(model: Wavae, audio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(raw latent mean, decoder log-mel, audio) of an offline pass through the posterior mean."""
    mean, _ = model.encoder(model.frontend(audio))
    mel = model.decoder(torch.cat([mean, model.measure_loudness(audio)], dim=1))
    return mean, mel, model.vocoder(mel)


def distillation_loss(student: Wavae, teacher: Wavae, audio: Tensor) -> Tensor:
    """L1(decoder log-mels) + L1(raw latents) + multi-resolution STFT loss of the audio.

    All against the teacher's outputs on the same input.  The audio term is the
    vocoder's training loss (spectral convergence plus log-magnitude L1 at three
    resolutions, ``wavae.train.losses``).  The latent term keeps the student's
    latent space where the stored PCA, and so the knobs, expect it.
    """
    with torch.no_grad():
        tz, tmel, taudio = _forward_parts(teacher, audio)
    sz, smel, saudio = _forward_parts(student, audio)
    spectral = multires_stft_loss(saudio, taudio, default_ffts(teacher.frontend.n_fft))
    return F.l1_loss(smel, tmel) + F.l1_loss(sz, tz) + spectral


def finetune(
    student: Wavae,
    teacher: Wavae,
    chunks: Tensor | np.ndarray,
    steps: int,
    batch: int = 8,
    lr: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Distil ``teacher`` into ``student`` (in place) on audio ``chunks`` [N, T]; returns the losses.

    ``chunks`` may be a memory-mapped array: only each step's batch is read.

    Batch norms stay in eval mode: their statistics, those of the training data,
    are kept, and only weights and biases move.  The loudness classifier (training
    only) and the fixed front-end are left alone.
    """
    if chunks.ndim != 2 or chunks.shape[0] == 0:
        raise PruneError("fine-tuning needs at least one audio chunk")
    device = next(student.parameters()).device
    teacher.eval()
    student.eval()
    params = [p for name, p in student.named_parameters()
              if p.requires_grad and not name.startswith(("frontend.", "classifier."))]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    bar = Progress(steps, "fine-tune", "step", enabled=progress)
    for _ in range(steps):
        idx = torch.randint(0, chunks.shape[0], (min(batch, chunks.shape[0]),), generator=gen)
        rows = chunks[idx] if isinstance(chunks, Tensor) else np.asarray(chunks[idx.numpy()])
        audio = torch.as_tensor(rows, dtype=torch.float32).unsqueeze(1).to(device)
        loss = distillation_loss(student, teacher, audio)
        if not torch.isfinite(loss):
            raise PruneError("the fine-tune loss became NaN or infinite; try a lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix({"loss": f"{losses[-1]:.4f}"})
        bar.update(1)
    bar.close()
    return losses


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def snr_db(ref: Tensor, est: Tensor) -> float:
    noise = (ref - est).pow(2).sum()
    return float(10.0 * torch.log10(ref.pow(2).sum().clamp_min(1e-20) / noise.clamp_min(1e-20)))


@torch.no_grad()
def _render(model: Wavae, audio: Tensor, batch: int = 8) -> Tensor:
    device = next(model.parameters()).device
    outs = [model(audio[i : i + batch].unsqueeze(1).to(device)).squeeze(1).cpu()
            for i in range(0, audio.shape[0], batch)]
    return torch.cat(outs)


@torch.no_grad()
def _mel_l1(frontend, a: Tensor, b: Tensor) -> float:
    device = frontend.mel_basis.device
    la = frontend.raw_log_mel(a.unsqueeze(1).to(device))
    lb = frontend.raw_log_mel(b.unsqueeze(1).to(device))
    return float((la - lb).abs().mean())


def model_figures(model: Wavae) -> dict:
    macs = count_macs(model)
    inference = sum(count_params(getattr(model, k)) for k in ("frontend", "encoder", "decoder", "vocoder"))
    return {"params": inference, "macs": macs["total"], "macs_by_part": macs}


@torch.no_grad()
def quality(model: Wavae, audio: Tensor, reference: Tensor | None, frontend) -> tuple[dict, Tensor]:
    """SNR (dB) and log-mel L1 of ``model``'s reconstruction vs the input and vs
    ``reference`` (the unpruned output), and the reconstruction itself."""
    out = _render(model.eval(), audio)
    q = {"snr_input_db": snr_db(audio, out), "mel_input": _mel_l1(frontend, audio, out)}
    if reference is not None:
        q.update(snr_unpruned_db=snr_db(reference, out), mel_unpruned=_mel_l1(frontend, reference, out))
    return q, out


def prune_and_finetune(
    model: Wavae,
    ratio: float,
    train_chunks: Tensor | np.ndarray | None,
    eval_chunks: Tensor | None,
    steps: int = 200,
    batch: int = 8,
    lr: float = 1e-4,
    progress: bool = True,
) -> tuple[Wavae, dict]:
    """Prune ``model`` (untouched), fine-tune the result, and measure every stage.

    Returns ``(pruned model, report)``; the report holds, per stage (``unpruned``,
    ``pruned``, ``finetuned``), parameters, MACs per second and, when
    ``eval_chunks`` is given, the reconstruction quality.
    """
    teacher = model.eval()
    stages: dict[str, dict] = {"unpruned": model_figures(teacher)}
    ref = None
    if eval_chunks is not None:
        q, ref = quality(teacher, eval_chunks, None, teacher.frontend)
        stages["unpruned"].update(q)
    student = prune_model(teacher, ratio)
    stages["pruned"] = model_figures(student)
    if eval_chunks is not None:
        stages["pruned"].update(quality(student, eval_chunks, ref, teacher.frontend)[0])
    losses: list[float] = []
    if steps > 0:
        if train_chunks is None:
            raise PruneError("fine-tuning needs training audio")
        losses = finetune(student, teacher, train_chunks, steps, batch=batch, lr=lr, progress=progress)
        stages["finetuned"] = model_figures(student)
        if eval_chunks is not None:
            stages["finetuned"].update(quality(student, eval_chunks, ref, teacher.frontend)[0])
    report = {
        "ratio": ratio,
        "steps": steps,
        "widths": widths_of(student),
        "stages": stages,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    return student.eval(), report


def format_report(report: dict) -> str:
    """The report as a plain-text table."""
    cols = [
        ("params", "params", lambda v: f"{v:,}"),
        ("GMAC/s", "macs", lambda v: f"{v / 1e9:.3f}"),
        ("SNR in dB", "snr_input_db", lambda v: f"{v:.2f}"),
        ("mel L1 in", "mel_input", lambda v: f"{v:.4f}"),
        ("SNR unpr dB", "snr_unpruned_db", lambda v: f"{v:.2f}"),
        ("mel L1 unpr", "mel_unpruned", lambda v: f"{v:.4f}"),
    ]
    rows = [["stage"] + [c[0] for c in cols]]
    for stage, figs in report["stages"].items():
        rows.append([stage] + [fmt(figs[k]) if figs.get(k) is not None else "-" for _, k, fmt in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    base, last = report["stages"]["unpruned"], list(report["stages"].values())[-1]
    learned = lambda f: sum(f["macs_by_part"][k] for k in ("encoder", "decoder", "vocoder"))  # noqa: E731
    lines += [
        "in: against the input audio; unpr: against the unpruned model's output; "
        "mel L1: mean |difference| of natural-log mels",
        f"ratio {report['ratio']}: parameters x{base['params'] / last['params']:.2f} fewer, "
        f"MACs x{base['macs'] / last['macs']:.2f} fewer "
        f"(VAE + MelGAN x{learned(base) / learned(last):.2f}; the STFT front-end is fixed)"
        + (f"; fine-tune loss {report['loss_first']:.4f} -> {report['loss_last']:.4f}"
           if report.get("loss_first") is not None else ""),
    ]
    return "\n".join(lines)
