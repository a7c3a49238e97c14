"""The training objective: what one batch costs, built from one small function per option.

``compute_loss`` reads top to bottom as one training step::

    noise = sample_noise(...)                 # noise_offset, force_consistent_noise,
                                              # optimal_noise_pairing(_samples)
    t = arch.sample_timesteps(...)            # min/max_denoising_steps, content_or_style (arch)
    latents, noise = differential_noise(...)  # loss_target: differential_noise
    noisy = arch.add_noise(latents, noise, t)
    pred = predict(...)                       # do_cfg + cfg_scale
    per_element = target_loss(...)            # loss_target noise/source/unaugmented, loss_type;
                                              # v-prediction through arch.target
    per_sample = masked_mean(...)             # masks: mask_path, alpha_mask, invert_mask...
    per_sample += inverted_mask_prior(...)    # inverted_mask_prior(_multiplier)
    per_sample = snr_weighting(...)           # min_snr_gamma, learnable_snr_gos
    loss = weighted_mean(...)                 # regularisation datasets: loss_multiplier
    loss += preservation_loss(...)            # diff_output_preservation, blank_prompt_preservation

Semantics follow ostris/ai-toolkit where it names the option; each function says what it does.
"Base model" predictions run under ``arch.lora_scale(0)``, which switches every adapter off
exactly, without gradients. ``ObjectiveState`` holds what lives across steps (the learnable SNR
weights); the loop adds its parameters to the optimizer and its state to checkpoints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.arch.base import Arch
from trainer.arch.tensors import expand_like
from trainer.config.schema import TrainingConfig
from trainer.config.sections.train import TrainConfig
from trainer.data.batches import derive_seed

# loss_target values that need the image before colour augmentations (``batch["unaugmented"]``).
NEEDS_UNAUGMENTED = ("unaugmented", "differential_noise")
SNR_WEIGHTS_LR = 0.01  # the learnable SNR weights' own learning rate (ai-toolkit's)


# ------------------------------------------------------------------------------------ the step
def compute_loss(
    arch: Arch,
    inputs: Any,
    batch: dict[str, Any],
    cfg: TrainingConfig,
    gen: torch.Generator,
    state: ObjectiveState | None = None,
) -> Tensor:
    """The loss of one batch; ``inputs`` gives latents and text embeddings (loop.ModelInputs)."""
    train = cfg.train
    state = state if state is not None else ObjectiveState()
    captions, masks = batch["captions"], batch["masks"]
    extra = sdxl_extra(batch)
    latents = inputs.latents(batch)
    noise = sample_noise(latents, batch["keys"], train, gen)
    t = arch.sample_timesteps(latents.shape[0], gen)
    unaugmented = None
    if train.loss_target in NEEDS_UNAUGMENTED:
        unaugmented = unaugmented_latents(arch, batch, latents)
    if train.loss_target == "differential_noise":
        latents, noise = differential_noise(latents, unaugmented, noise)
    noisy = arch.add_noise(latents, noise, t)
    pred = predict(arch, inputs, noisy, t, captions, extra, train)
    per_element = target_loss(arch, train, latents, unaugmented, noise, noisy, pred, t)
    per_sample = masked_mean(per_element, masks)
    if train.inverted_mask_prior and masks is not None:
        prior = base_prediction(arch, inputs, noisy, t, captions, extra, train)
        per_sample = per_sample + inverted_mask_prior(
            pred, prior, masks, train.inverted_mask_prior_multiplier
        )
    per_sample, balance = snr_weighting(per_sample, arch, t, train, state)
    loss = weighted_mean(per_sample, batch["loss_multiplier"])
    if train.diff_output_preservation:
        prompts = class_prompts(captions, batch_triggers(batch, cfg), train)
        dop = preservation_loss(arch, inputs, noisy, t, prompts, extra, train)
        loss = loss + train.diff_output_preservation_multiplier * dop
    if train.blank_prompt_preservation:
        blank = [""] * len(captions)
        bpp = preservation_loss(arch, inputs, noisy, t, blank, extra, train)
        loss = loss + train.blank_prompt_preservation_multiplier * bpp
    if balance is not None:  # trains the SNR weights; adds 0 to the value, so logs are unchanged
        loss = loss + (balance - balance.detach())
    return loss


def needs_unaugmented(train: TrainConfig) -> bool:
    """Whether batches must carry the image before colour augmentations."""
    return train.loss_target in NEEDS_UNAUGMENTED


# ----------------------------------------------------------------------------------- noise
def sample_noise(
    latents: Tensor, keys: list[str], train: TrainConfig, gen: torch.Generator
) -> Tensor:
    """Gaussian noise shaped like ``latents``, drawn from the run's generator.

    ``force_consistent_noise`` draws each image's noise from its own generator seeded by the
    image (see ``noise_identity``), so it gets the same noise every epoch;
    ``optimal_noise_pairing`` picks, per image, the closest of several draws. Both work per
    image; without them the whole batch is drawn at once.
    """
    if not (train.force_consistent_noise or train.optimal_noise_pairing):
        noise = torch.randn(latents.shape, generator=gen).to(latents)
        return offset_noise(noise, train.noise_offset, gen)
    rows = []
    for latent, key in zip(latents, keys, strict=True):
        g = item_generator(train.seed, key) if train.force_consistent_noise else gen
        if train.optimal_noise_pairing:
            one = optimal_noise(latent, train.optimal_noise_pairing_samples, g)
        else:
            one = torch.randn(latent.shape, generator=g)
        rows.append(offset_noise(one[None], train.noise_offset, g)[0])
    return torch.stack(rows).to(latents)


def offset_noise(noise: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """noise_offset: shift every (image, channel) of the noise by ``strength × N(0, 1)``.

    The network then also learns to change an image's mean per channel (very dark or bright
    images), which zero-mean noise never asks of it (offset noise, N. Guttenberg 2023).
    """
    if not strength:
        return noise
    offset = torch.randn((*noise.shape[:2], *([1] * (noise.dim() - 2))), generator=gen)
    return noise + strength * offset.to(noise)


def optimal_noise(latent: Tensor, samples: int, gen: torch.Generator) -> Tensor:
    """optimal_noise_pairing: of ``samples`` Gaussian draws, the one with the least mean squared
    distance to the image's latents (ai-toolkit's choice rule; "immiscible" noise pairing)."""
    candidates = torch.randn((samples, *latent.shape), generator=gen)
    distances = (candidates - latent.detach().float().cpu()).pow(2).flatten(1).mean(1)
    return candidates[int(distances.argmin())]


def noise_identity(key: str) -> str:
    """The part of an item key that names the image as trained: content, size, crop and flips.

    Item keys are ``hash|version|geometry|flips[|augmentations]`` (``trainer.data.batches.item_key``);
    the random colour/geometry augmentation draw is left out, so an image keeps its noise
    across epochs even when its augmentations change (ai-toolkit: same image at a given size).
    """
    return "|".join(key.split("|")[:4])


def item_generator(seed: int, key: str) -> torch.Generator:
    """force_consistent_noise: a generator seeded by the run seed and the image."""
    return torch.Generator().manual_seed(derive_seed(seed, "noise", noise_identity(key)))


# ------------------------------------------------------------------------------ loss targets
def unaugmented_latents(arch: Arch, batch: dict[str, Any], latents: Tensor) -> Tensor:
    """Latents of the images before colour augmentations (same crop and flips as the input).

    Encoded one image at a time, like the input latents, so results do not depend on batching.
    Batches without an unaugmented copy (no augmentations) use the input latents themselves.
    """
    pixels = batch.get("unaugmented")
    if pixels is None:
        return latents.detach().clone()
    rows = [arch.encode_images(pixels[i : i + 1])[0] for i in range(pixels.shape[0])]
    return torch.stack(rows).to(latents)


def differential_noise(
    latents: Tensor, unaugmented: Tensor, noise: Tensor
) -> tuple[Tensor, Tensor]:
    """loss_target differential_noise (ai-toolkit): noise the *unaugmented* latents and fold
    half of what the augmentations changed into the noise the network must predict, so it
    learns to take the augmentation out like noise instead of learning to draw it."""
    return unaugmented, noise + 0.5 * (latents - unaugmented)


def target_loss(
    arch: Arch,
    train: TrainConfig,
    latents: Tensor,
    unaugmented: Tensor | None,
    noise: Tensor,
    noisy: Tensor,
    pred: Tensor,
    t: Tensor,
) -> Tensor:
    """Per-element loss of the prediction for ``train.loss_target``.

    noise / differential_noise: against ``arch.target`` (the noise; the velocity for
    v-prediction models and Flux). source / unaugmented (ai-toolkit): the clean latents the
    prediction implies (x̂0) against the clean latents (or the unaugmented ones), both scaled by
    σ⁻¹ = √SNR, the weighting ai-toolkit uses (σ⁻² on the squared error). For ε-prediction
    models that is the noise loss again (the schema refuses ``source`` there).
    """
    kind, delta = train.loss_type, train.huber_delta
    if train.loss_target in ("noise", "differential_noise"):
        target = arch.target(latents, noise, t)
        return elementwise_loss(pred.float(), target.float(), kind, delta)
    clean = latents if train.loss_target == "source" else unaugmented
    assert clean is not None, "unaugmented latents are needed for loss_target unaugmented"
    scale = expand_like(arch.snr(t).float().sqrt(), pred).float()
    x0 = predicted_clean(arch, noisy.float(), pred.float(), t)
    return elementwise_loss(scale * x0, scale * clean.float(), kind, delta)


def predicted_clean(arch: Arch, noisy: Tensor, pred: Tensor, t: Tensor) -> Tensor:
    """x̂0: the clean latents a prediction implies, in each architecture's parametrisation.

    Flux (flow): ``x_t - σ v``. SD, on the DDPM-range input ``x_t`` (Euler inputs rescaled):
    ε: ``(x_t - √(1-ᾱ) ε) / √ᾱ``; v: ``√ᾱ x_t - √(1-ᾱ) v``.
    """
    if arch.is_flow:
        return noisy - expand_like(arch.sigma(t), noisy) * pred
    x_t = arch.model_input(noisy, t)
    a = expand_like(arch.alphas_cumprod.to(t.device)[t.long()], x_t)
    if arch.is_v_pred:
        return a.sqrt() * x_t - (1 - a).sqrt() * pred
    return (x_t - (1 - a).sqrt() * pred) / a.sqrt()


def elementwise_loss(pred: Tensor, target: Tensor, kind: str, delta: float) -> Tensor:
    """train.loss_type, unreduced."""
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if kind == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=delta)
    return F.mse_loss(pred, target, reduction="none")


# ------------------------------------------------------------------------------- prediction
def predict(
    arch: Arch,
    inputs: Any,
    noisy: Tensor,
    t: Tensor,
    captions: list[str],
    extra: dict[str, Any],
    train: TrainConfig,
) -> Tensor:
    """The network's prediction for ``captions``; with ``do_cfg`` guided as at generation time."""
    pred = arch.predict(noisy, t, inputs.text(captions), extra)
    if not train.do_cfg:
        return pred
    unconditional = arch.predict(noisy, t, inputs.text([""] * len(captions)), extra)
    return cfg_guidance(pred, unconditional, train.cfg_scale)


def cfg_guidance(conditional: Tensor, unconditional: Tensor, scale: float) -> Tensor:
    """do_cfg / cfg_scale: classifier-free guidance against the empty prompt, applied to the
    training prediction (ai-toolkit): ``uncond + scale × (cond - uncond)``. Gradients flow
    through both passes."""
    return unconditional + scale * (conditional - unconditional)


def base_prediction(
    arch: Arch,
    inputs: Any,
    noisy: Tensor,
    t: Tensor,
    captions: list[str],
    extra: dict[str, Any],
    train: TrainConfig,
) -> Tensor:
    """What the base model (every adapter off) predicts here, without gradients."""
    with torch.no_grad(), arch.lora_scale(0.0):
        return predict(arch, inputs, noisy, t, captions, extra, train).detach()


def sdxl_extra(batch: dict[str, Any]) -> dict[str, Any]:
    """SDXL's per-image size conditioning (other architectures ignore it)."""
    return {
        "original_size": batch["original_sizes"],
        "crop_top_left": batch["crop_top_lefts"],
        "target_size": batch["target_sizes"],
    }


# ------------------------------------------------------------------------------------ masks
def masked_mean(per_element: Tensor, masks: Tensor | None) -> Tensor:
    """Mean loss per sample, weighted by the mask (pixel size, scaled to the latents by area).

    Masks come from ``mask_path`` or ``alpha_mask`` (``invert_mask`` swaps them,
    ``mask_min_value`` keeps a floor; see ``trainer.data.transforms``). A zero-weight area adds nothing to
    the loss and gets no gradient.
    """
    if masks is None:
        return per_element.mean(dim=tuple(range(1, per_element.dim())))
    mask = F.interpolate(masks.float(), size=tuple(per_element.shape[-2:]), mode="area")
    mask = mask.to(per_element)
    dims = tuple(range(1, per_element.dim()))
    return (per_element * mask).mean(dim=dims) / mask.mean(dim=dims).clamp_min(1e-6)


def inverted_mask_prior(pred: Tensor, prior: Tensor, masks: Tensor, multiplier: float) -> Tensor:
    """inverted_mask_prior (ai-toolkit): in the masked-out area, pull the prediction towards the
    base model's (MSE), so the LoRA leaves backgrounds as the base model draws them."""
    per_element = F.mse_loss(pred.float(), prior.float(), reduction="none")
    return multiplier * masked_mean(per_element, 1.0 - masks.float())


# ------------------------------------------------------------------------------- weighting
def min_snr_weight(snr: Tensor, gamma: float, v_prediction: bool) -> Tensor:
    """Min-SNR-γ (Hang et al. 2023): ``min(SNR, γ) / SNR`` for ε-prediction,
    ``min(SNR, γ) / (SNR + 1)`` for v-prediction; easy low-noise steps weigh less."""
    snr = snr.float()
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return (clipped / (snr + 1) if v_prediction else clipped / snr.clamp_min(1e-8)).detach()


def snr_weighting(
    per_sample: Tensor, arch: Arch, t: Tensor, train: TrainConfig, state: ObjectiveState
) -> tuple[Tensor, Tensor | None]:
    """Per-noise-level loss weights: learnable (``learnable_snr_gos``) or Min-SNR-γ.

    Returns the weighted losses and, for learnable weights, their balance loss (else None).
    """
    if state.snr_weights is not None:
        return state.snr_weights(per_sample, arch.snr(t).to(per_sample.device))
    if train.min_snr_gamma:
        v_prediction = bool(getattr(arch, "is_v_pred", False))
        weight = min_snr_weight(arch.snr(t), train.min_snr_gamma, v_prediction)
        return per_sample * weight.to(per_sample), None
    return per_sample, None


class LearnableSNRWeights(nn.Module):
    """learnable_snr_gos: a loss weight per noise level from four learned numbers.

    ``weight(SNR) = |γ / ((SNR + offset_1) × scale + offset_2)|``, with ai-toolkit's starting
    values. The LoRA trains on the weighted loss with the weight held fixed; the four numbers
    train (in their own optimizer group) on a balance loss that pulls every sample's weighted
    loss towards a running mean of the raw loss, so no noise level dominates the gradient.
    """

    START: ClassVar[dict[str, float]] = {
        "offset_1": 0.0,
        "offset_2": 0.777,
        "scale": 4.14,
        "gamma": 2.03,
    }

    def __init__(self, momentum: float = 0.95) -> None:
        super().__init__()
        self.momentum = momentum
        for name, value in self.START.items():  # 1-element tensors suit every optimizer
            setattr(self, name, nn.Parameter(torch.tensor([value])))
        self.register_buffer("running_loss", torch.full((1,), float("nan")))

    def weight(self, snr: Tensor) -> Tensor:
        denominator = (snr.float() + self.offset_1) * self.scale + self.offset_2
        return self.gamma.abs() / denominator.abs().clamp_min(1e-4)

    def forward(self, per_sample: Tensor, snr: Tensor) -> tuple[Tensor, Tensor]:
        raw = per_sample.detach().float()
        with torch.no_grad():
            batch_mean = raw.mean().reshape(1)
            if torch.isnan(self.running_loss).all():
                self.running_loss.copy_(batch_mean)
            else:
                self.running_loss.mul_(self.momentum).add_((1 - self.momentum) * batch_mean)
        weight = self.weight(snr)
        balance = (raw * weight - self.running_loss).pow(2).mean()
        return per_sample * weight.detach().to(per_sample), balance


# ---------------------------------------------------------------------- batches and datasets
def weighted_mean(per_sample: Tensor, loss_multiplier: Tensor) -> Tensor:
    """Batch loss: each image's loss times its dataset's ``loss_multiplier``, averaged.

    Regularisation datasets (``is_reg``) usually set a lower multiplier; the weight applies
    even when a batch holds images of one dataset only (as ai-toolkit's reg weight does).
    """
    return (per_sample * loss_multiplier.to(per_sample)).mean()


# ------------------------------------------------------------------------------ preservation
def preservation_loss(
    arch: Arch,
    inputs: Any,
    noisy: Tensor,
    t: Tensor,
    prompts: list[str],
    extra: dict[str, Any],
    train: TrainConfig,
) -> Tensor:
    """MSE between the LoRA's and the base model's prediction for ``prompts`` on the same noisy
    latents: 0 while the adapters are zero, growing as the LoRA changes those prompts.

    diff_output_preservation uses the captions with the trigger replaced by the class word;
    blank_prompt_preservation the empty prompt (ai-toolkit's DOP / BPP).
    """
    base = base_prediction(arch, inputs, noisy, t, prompts, extra, train)
    pred = predict(arch, inputs, noisy, t, prompts, extra, train)
    return F.mse_loss(pred.float(), base.float())


def batch_triggers(batch: dict[str, Any], cfg: TrainingConfig) -> list[str | None]:
    return [cfg.datasets[i].trigger_word for i in batch["dataset_indices"]]


def class_prompts(captions: list[str], triggers: list[str | None], train: TrainConfig) -> list[str]:
    """Each caption with its dataset's trigger word (whole word, any case) -> the class word."""
    word = train.diff_output_preservation_class.strip()
    out = []
    for caption, trigger in zip(captions, triggers, strict=True):
        if trigger:
            pattern = re.compile(rf"(?<!\w){re.escape(trigger)}(?!\w)", re.IGNORECASE)
            caption = pattern.sub(word, caption)
        out.append(caption)
    return out


# ----------------------------------------------------------------------------------- state
@dataclass
class ObjectiveState:
    """What the objective keeps across steps: the learnable SNR weights (when on)."""

    snr_weights: LearnableSNRWeights | None = None

    @classmethod
    def for_run(cls, cfg: TrainingConfig, device: torch.device) -> ObjectiveState:
        weights = LearnableSNRWeights().to(device) if cfg.train.learnable_snr_gos else None
        return cls(snr_weights=weights)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups for the objective's own parameters (none unless learnable SNR)."""
        if self.snr_weights is None:
            return []
        params = list(self.snr_weights.parameters())
        return [{"params": params, "lr": SNR_WEIGHTS_LR, "weight_decay": 0.0, "name": "snr"}]

    def state_dict(self) -> dict[str, Any]:
        weights = self.snr_weights
        return {"snr_weights": weights.state_dict() if weights is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        saved = (state or {}).get("snr_weights")
        if self.snr_weights is not None and saved is not None:
            self.snr_weights.load_state_dict(saved)


__all__ = [
    "LearnableSNRWeights",
    "ObjectiveState",
    "compute_loss",
    "needs_unaugmented",
]
