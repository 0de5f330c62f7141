"""Two-stage training: the VAE (with the adversarial loudness classifier), then the
PCA of its latent, then the MelGAN vocoder.  Single process or DDP.

The vocoder stage starts with ``train.adv_start`` steps on the multi-resolution
STFT loss alone (the Parallel WaveGAN / Multi-band MelGAN warm-up), then adds
the discriminator.  A multi-band vocoder is trained against the input delayed by
its PQMF bank's delay, and its sub-bands also against the PQMF analysis of the
input (Multi-band MelGAN's sub-band STFT loss).  The learning rate of each stage
follows ``train.lr_schedule`` as a pure function of the stage's step, so resume
needs no scheduler state.

A run resumes exactly: model, discriminator, optimisers and step counters are in
the checkpoint, and every random draw of a step (its batch, gains and the
reparameterisation noise) is seeded from (seed, stage, step, rank) alone, so no
RNG state needs saving and resume is exact under DDP and on CUDA too.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from wavae.errors import WavaeError
from wavae.progress import Progress

from .checkpoint import CHECKPOINT, FORMAT_VERSION, RunError, atomic_torch_save, load_checkpoint, write_config
from .config import Config
from .factory import build_discriminator, build_model, build_pqmf_analysis
from .loudness import fit_gmm_1d
from .losses import default_ffts, multires_stft_loss
from .melgan import discriminator_hinge, feature_matching, generator_hinge
from .model import Wavae
from .vae import kl_divergence, reparameterize

log = logging.getLogger(__name__)


class TrainingDiverged(WavaeError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def delay_signal(x: Tensor, samples: int) -> Tensor:
    """``x`` [N, C, T] delayed by ``samples``: zeros in front, the same length."""
    if samples == 0:
        return x
    return torch.nn.functional.pad(x, (samples, 0))[..., : x.shape[-1]]


class VAEObjective(nn.Module):
    """The VAE stage's loss as one module, so DDP sees one forward per step.
    It shares (does not copy) the model's parts."""

    def __init__(self, model: Wavae, recon_sigma: float):
        super().__init__()
        self.frontend, self.encoder, self.decoder = model.frontend, model.encoder, model.decoder
        self.loudness, self.flattener, self.classifier = model.loudness, model.flattener, model.classifier
        self.recon_sigma = recon_sigma
        self.per_frame = model.frontend.n_mels * model.frame // model.frontend.hop

    def forward(self, audio: Tensor, beta: float, adv_strength: float) -> dict[str, Tensor]:
        with torch.no_grad():
            mel = self.frontend(audio)
            loud = self.flattener(self.loudness(audio))
        mean, logvar = self.encoder(mel)
        z = reparameterize(mean, logvar)
        mel_hat = self.decoder(torch.cat([z, loud], dim=1))
        mse = torch.mean((mel_hat - mel) ** 2)
        # Gaussian NLL per latent frame (constants dropped), on the same scale as the KL
        recon = mse * self.per_frame / (2 * self.recon_sigma**2)
        kl = kl_divergence(mean, logvar)
        adv = self.classifier.loss(z, loud, adv_strength)
        total = recon + beta * kl + adv
        return {"loss": total, "recon": recon, "mse": mse, "kl": kl, "adv": adv}


class Trainer:
    def __init__(
        self,
        cfg: Config,
        run: Path,
        chunks: np.ndarray,
        device: str = "cpu",
        dist_info: Dist | None = None,
        data_dir: str | None = None,
        show_progress: bool = True,
    ):
        self.cfg, self.run, self.chunks = cfg, Path(run), chunks
        self.dist = dist_info or Dist()
        self.device = torch.device(device)
        self.data_dir = data_dir
        self.show_progress = show_progress and self.dist.main
        t = cfg.train
        torch.manual_seed(t.seed)
        self.model: Wavae = build_model(cfg).to(self.device)
        self.disc = build_discriminator(cfg).to(self.device)
        vae_params = [p for m in (self.model.encoder, self.model.decoder, self.model.classifier) for p in m.parameters()]
        self.opt_vae = torch.optim.Adam(vae_params, lr=t.lr, betas=t.betas)
        self.opt_g = torch.optim.Adam(self.model.vocoder.parameters(), lr=t.vocoder_lr, betas=t.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=t.vocoder_lr, betas=t.betas)
        self.progress = {"stats_done": False, "vae_steps": 0, "pca_done": False, "vocoder_steps": 0}
        self.ffts = default_ffts(cfg.frontend.n_fft)
        self.analysis = build_pqmf_analysis(cfg)
        if self.analysis is not None:
            self.analysis = self.analysis.to(self.device)
            self.sub_ffts = default_ffts(cfg.frontend.n_fft // cfg.vocoder.bands)
        self._stop = False
        self._writer = None
        self.vae_obj = VAEObjective(self.model, t.recon_sigma)
        self.vae_ddp = self._wrap(self.vae_obj)
        self.g_ddp = self._wrap(self.model.vocoder.net)  # the trained part; the PQMF bank is fixed
        self.d_ddp = self._wrap(self.disc)

    # plumbing -----------------------------------------------------------------
    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.dist.world == 1:
            return module
        ids = [self.dist.local_rank] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids, broadcast_buffers=True)

    @property
    def writer(self):
        if self._writer is None and self.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run / "logs"))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def seed_step(self, stage: str) -> torch.Generator:
        """Seed this step's draws from (seed, stage, step, rank): the global RNG (the
        reparameterisation noise, on every device) and the returned batch generator."""
        stage_id = {"vae": 1, "vocoder": 2}[stage]
        step = self.progress[f"{stage}_steps"]
        s = ((self.cfg.train.seed * 3 + stage_id) * 1_000_003 + step) * 1009 + self.dist.rank
        torch.manual_seed(s)
        return torch.Generator().manual_seed(s)

    def sample_batch(self, g: torch.Generator) -> Tensor:
        """A batch of random chunks at random gains (-12..0 dB), so loudness varies."""
        n = self.chunks.shape[0]
        idx = torch.randint(n, (self.cfg.train.batch,), generator=g).numpy()
        gain_db = torch.empty(self.cfg.train.batch, 1, 1).uniform_(-12.0, 0.0, generator=g)
        x = torch.from_numpy(np.stack([self.chunks[i] for i in idx])).float().unsqueeze(1)
        return (x * 10 ** (gain_db / 20)).to(self.device)

    # checkpoints ----------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "disc": self.disc.state_dict(),
            "opt_vae": self.opt_vae.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "progress": dict(self.progress),
            "data_dir": self.data_dir,
        }

    def save(self) -> None:
        if self.dist.main:
            self.run.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(self.state(), self.run / CHECKPOINT)
            p = self.progress
            log.info("checkpoint saved: %s (vae %d steps, vocoder %d steps)", self.run / CHECKPOINT,
                     p["vae_steps"], p["vocoder_steps"])
        self.dist.barrier()

    def start(self, resume: bool) -> None:
        """Write the config of a new run, or restore everything from its checkpoint."""
        if resume:
            ckpt = load_checkpoint(self.run)
            if "pruned_widths" in ckpt:
                raise RunError(
                    f"{self.run} is a pruned run: `wavae train` cannot continue it; fine-tune it with "
                    f"`wavae prune SOURCE --ratio R --steps N --out {self.run} --force`"
                )
            try:
                self.model.load_state_dict(ckpt["model"])
                self.disc.load_state_dict(ckpt["disc"])
                self.opt_vae.load_state_dict(ckpt["opt_vae"])
                self.opt_g.load_state_dict(ckpt["opt_g"])
                self.opt_d.load_state_dict(ckpt["opt_d"])
                self.progress.update(ckpt["progress"])
            except (KeyError, RuntimeError, ValueError) as e:
                raise RunError(f"checkpoint in {self.run} does not match its config or is incomplete: {e}") from e
            self.data_dir = self.data_dir or ckpt.get("data_dir")
        elif self.dist.main:
            self.run.mkdir(parents=True, exist_ok=True)
            write_config(self.run, self.cfg)
        self.dist.barrier()

    # statistics -----------------------------------------------------------------
    @torch.no_grad()
    def fit_statistics(self) -> None:
        """Log-mel normalisation and the loudness mixture, from the data."""
        if self.progress["stats_done"]:
            return
        n = min(self.chunks.shape[0], 256)
        x = torch.from_numpy(np.array(self.chunks[:n], dtype=np.float32)).unsqueeze(1)
        logmel = torch.cat([self.model.frontend.raw_log_mel(b) for b in x.split(16)])
        self.model.frontend.set_stats(logmel.mean().item(), logmel.std().item())
        db = torch.cat([self.model.loudness(b) for b in x.split(16)]).flatten().numpy()
        w, m, s = fit_gmm_1d(db, self.cfg.loudness.n_components, seed=self.cfg.train.seed)
        self.model.flattener.set_params(w, m, s)
        self.progress["stats_done"] = True

    @torch.no_grad()
    def fit_pca(self) -> None:
        """Rotate the latent so dimension 0 has the most variance.  Uses its own
        generator, so fitting it never shifts the training batches (exact resume)."""
        self.model.eval()
        g = torch.Generator().manual_seed(self.cfg.train.seed + 7919)
        zs = []
        for _ in range(self.cfg.train.pca_batches):
            mean, _ = self.model.encoder(self.model.frontend(self.sample_batch(g)))
            zs.append(mean.transpose(1, 2).reshape(-1, mean.shape[1]).double().cpu())
        z = torch.cat(zs)
        mu = z.mean(0)
        cov = torch.cov((z - mu).T)
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        evals, evecs = evals[order].clamp(min=1e-8), evecs[:, order]
        self.model.set_pca(mu.float(), evecs.float(), evals.sqrt().float())
        self.progress["pca_done"] = True

    # stages --------------------------------------------------------------------
    def _ramp(self, step: int, warmup: int) -> float:
        return 1.0 if warmup <= 0 else min(1.0, step / warmup)

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at a stage's ``step`` (0-based): linear warm-up over
        ``lr_warmup`` steps, then constant, or a cosine down to ``lr_floor`` over the next
        ``lr_decay_steps``, then held."""
        t = self.cfg.train
        warm = min(1.0, (step + 1) / t.lr_warmup) if t.lr_warmup > 0 else 1.0
        if t.lr_schedule == "constant":
            return warm
        progress = min(1.0, max(0, step - t.lr_warmup) / t.lr_decay_steps)
        return warm * (t.lr_floor + (1.0 - t.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _set_lr(self, step: int, *pairs: tuple[torch.optim.Optimizer, float]) -> None:
        f = self.lr_factor(step)
        for opt, base in pairs:
            for group in opt.param_groups:
                group["lr"] = base * f

    def _check(self, losses: dict[str, Tensor], stage: str, step: int) -> None:
        bad = [k for k, v in losses.items() if not math.isfinite(v.item())]
        if bad:
            raise TrainingDiverged(
                f"{stage} loss {', '.join(bad)} became non-finite at step {step}; "
                f"the last good checkpoint in {self.run} is kept. Lower the learning rate "
                f"(train.lr / train.vocoder_lr) or check the data for clipping or NaN."
            )

    def vae_step(self) -> dict[str, float]:
        t, step = self.cfg.train, self.progress["vae_steps"]
        self.model.train()
        x = self.sample_batch(self.seed_step("vae"))
        beta = t.kl_weight * self._ramp(step, t.kl_warmup)
        strength = self.cfg.loudness.adv_weight * self._ramp(step, self.cfg.loudness.adv_warmup)
        self._set_lr(step, (self.opt_vae, t.lr))
        losses = self.vae_ddp(x, beta, strength)
        self._check(losses, "VAE", step + 1)
        self.opt_vae.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.opt_vae.step()
        self.progress["vae_steps"] = step + 1
        self.progress["pca_done"] = False  # the latent moved: its PCA is stale
        return {k: v.item() for k, v in losses.items()}

    def vocoder_step(self) -> dict[str, float]:
        t, step = self.cfg.train, self.progress["vocoder_steps"]
        self.model.vocoder.train()
        self.disc.train()
        x = self.sample_batch(self.seed_step("vocoder"))
        with torch.no_grad():
            mel = self.model.frontend(x)
            if t.finetune_on_vae:
                self.model.encoder.eval()
                self.model.decoder.eval()
                mean, _ = self.model.encoder(mel)
                mel = self.model.decode_mel(mean, self.model.measure_loudness(x))
        self._set_lr(step, (self.opt_g, t.vocoder_lr), (self.opt_d, t.vocoder_lr))
        bands = self.g_ddp(mel)
        y = self.model.vocoder.synthesize(bands)
        x_bands = None
        if self.analysis is not None:
            x_bands = self.analysis.target(x)
            x = delay_signal(x, self.model.delay)  # what the vocoder can causally produce
        out: dict[str, Tensor] = {}
        adversarial = step >= t.adv_start
        if adversarial:
            scores = self.d_ddp(torch.cat([x, y.detach()]))
            real = [[f[: x.shape[0]] for f in s] for s in scores]
            fake = [[f[x.shape[0] :] for f in s] for s in scores]
            out["disc"] = discriminator_hinge(real, fake)
            self._check(out, "discriminator", step + 1)
            self.opt_d.zero_grad(set_to_none=True)
            out["disc"].backward()
            self.opt_d.step()
        spectral = multires_stft_loss(y, x, self.ffts)
        if x_bands is not None:
            out["spectral_full"] = spectral
            out["spectral_sub"] = multires_stft_loss(bands.flatten(0, 1).unsqueeze(1),
                                                     x_bands.flatten(0, 1).unsqueeze(1), self.sub_ffts)
            spectral = (spectral + t.subband_weight * out["spectral_sub"]) / (1.0 + t.subband_weight)
        out["spectral"] = spectral
        g_loss = t.mel_weight * spectral
        if adversarial:
            disc = self.disc  # unwrapped, frozen: the gradient flows through D into G only
            disc.requires_grad_(False)
            with torch.no_grad():
                real = disc(x)
            fake = disc(y)
            out["gen"] = generator_hinge(fake)
            out["fm"] = feature_matching(real, fake)
            g_loss = g_loss + out["gen"] + t.fm_weight * out["fm"]
        out["loss"] = g_loss
        try:
            self._check(out, "vocoder", step + 1)
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
        finally:
            self.disc.requires_grad_(True)
        self.opt_g.step()
        self.progress["vocoder_steps"] = step + 1
        return {k: v.item() for k, v in out.items()}

    def _loop(self, stage: str, total: int, step_fn: Callable[[], dict[str, float]]) -> list[dict[str, float]]:
        key = f"{stage}_steps"
        done = self.progress[key]
        history: list[dict[str, float]] = []
        if done >= total:
            return history
        bar = None
        if self.show_progress:  # a terminal: logs get the plain line below every log_every steps
            bar = Progress(total, f"train {stage}", "step", initial=done)
        every = self.cfg.train.log_every
        since, tick = done, time.perf_counter()
        try:
            while self.progress[key] < total and not self._stop:
                losses = step_fn()
                history.append(losses)
                step = self.progress[key]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: v for k, v in losses.items() if k != "loss"})
                if self.dist.main and step % every == 0:
                    for k, v in losses.items():
                        self.writer.add_scalar(f"{stage}/{k}", v, step)
                    now = time.perf_counter()
                    rate = (step - since) / max(now - tick, 1e-9)
                    since, tick = step, now
                    lr = self.lr_factor(step - 1) * (self.cfg.train.lr if stage == "vae" else self.cfg.train.vocoder_lr)
                    self.writer.add_scalar(f"{stage}/lr", lr, step)
                    # a plain line for logs that are files, not terminals (the bar redraws in place)
                    log.info("%s step %d/%d  %.3f steps/s  lr %.3g  %s", stage, step, total, rate, lr,
                             "  ".join(f"{k} {v:.4g}" for k, v in losses.items()))
                if step % self.cfg.train.ckpt_every == 0:
                    self.save()
                    if self.dist.main:
                        self.log_media(stage, step)
        finally:
            if bar is not None:
                bar.close()
        return history

    def train_vae(self, steps: int) -> list[dict[str, float]]:
        self.fit_statistics()
        return self._loop("vae", steps, self.vae_step)

    def train_vocoder(self, steps: int) -> list[dict[str, float]]:
        self.fit_statistics()
        return self._loop("vocoder", steps, self.vocoder_step)

    def fit(self, stage: str, steps: int, vae_steps: int | None = None) -> dict[str, list[dict[str, float]]]:
        """Train ``stage`` (vae | vocoder | all) to ``steps`` steps per stage (the VAE to
        ``vae_steps`` when given), saving on the way, at the end and on a first Ctrl-C
        (a second one aborts)."""
        history: dict[str, list[dict[str, float]]] = {}
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True
            log.warning("interrupted: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

        installed = False
        try:
            signal.signal(signal.SIGINT, on_sigint)
            installed = True
        except ValueError:  # not the main thread
            pass
        try:
            if stage in ("vae", "all"):
                history["vae"] = self.train_vae(steps if vae_steps is None else vae_steps)
            if self.progress["vae_steps"] and not self.progress["pca_done"] and not self._stop:
                self.fit_pca()  # also when a resumed run goes straight to the vocoder
            if stage in ("vocoder", "all") and not self._stop:
                history["vocoder"] = self.train_vocoder(steps)
            self.save()
            if self.dist.main:
                self.log_media("final", self.progress["vae_steps"] + self.progress["vocoder_steps"])
        finally:
            if installed:
                signal.signal(signal.SIGINT, previous)
            self.close()
        return history

    @property
    def interrupted(self) -> bool:
        return self._stop

    # media ---------------------------------------------------------------------
    @torch.no_grad()
    def log_media(self, tag: str, step: int) -> None:
        """Mel images (input / VAE reconstruction) and audio to tensorboard."""
        if self.writer is None:
            return
        self.model.eval()
        x = torch.from_numpy(np.array(self.chunks[:1], dtype=np.float32)).unsqueeze(1).to(self.device)
        mel = self.model.frontend(x)
        mean, _ = self.model.encoder(mel)
        mel_hat = self.model.decode_mel(mean, self.model.measure_loudness(x))
        img = torch.cat([mel[0], mel_hat[0]], dim=0).flip(0)
        img = (img - img.min()) / (img.max() - img.min() + 1e-9)
        self.writer.add_image(f"{tag}/mel_input_over_reconstruction", img.unsqueeze(0).cpu(), step)
        self.writer.add_audio(f"{tag}/input", x[0].cpu(), step, sample_rate=self.cfg.frontend.sample_rate)
        if self.progress["vocoder_steps"]:
            y = self.model.vocoder(mel_hat)
            self.writer.add_audio(f"{tag}/reconstruction", y[0].clamp(-1, 1).cpu(), step,
                                  sample_rate=self.cfg.frontend.sample_rate)
        self.writer.flush()
