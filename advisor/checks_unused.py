"""Settings changed from their default that do nothing because the switch they belong to is off.

A common confusion ("I set lokr_factor 8 and nothing changed"): each is reported as a
suggestion with a fix that resets the setting (or, where it is clearly intended, names the
switch in the message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from advisor.findings import Context, Finding, finding, rule
from advisor.patch import default_of
from trainer.config.introspection import resolved
from trainer.config.paths import get_path
from trainer.config.schema import TrainingConfig

# (setting, the switch it needs as text, is the switch on?)
UNUSED: tuple[tuple[str, str, Callable[[TrainingConfig], bool]], ...] = (
    ("network.lokr_factor", "network.type lokr", lambda c: c.network.type == "lokr"),
    ("network.lokr_full_rank", "network.type lokr", lambda c: c.network.type == "lokr"),
    ("train.huber_delta", "train.loss_type huber", lambda c: c.train.loss_type == "huber"),
    (
        "train.timestep_shift",
        "train.timestep_type shift",
        lambda c: resolved(c, "timestep_type") == "shift",
    ),
    (
        "train.lr_scheduler_params.num_cycles",
        "lr_scheduler cosine_with_restarts",
        lambda c: c.train.lr_scheduler == "cosine_with_restarts",
    ),
    (
        "train.lr_scheduler_params.power",
        "lr_scheduler polynomial",
        lambda c: c.train.lr_scheduler == "polynomial",
    ),
    (
        "train.lr_scheduler_params.min_lr_ratio",
        "a decaying lr_scheduler",
        lambda c: c.train.lr_scheduler not in ("constant", "constant_with_warmup"),
    ),
    ("train.ema_decay", "train.use_ema", lambda c: c.train.use_ema),
    ("train.cfg_scale", "train.do_cfg", lambda c: c.train.do_cfg),
    (
        "train.optimal_noise_pairing_samples",
        "train.optimal_noise_pairing",
        lambda c: c.train.optimal_noise_pairing,
    ),
    (
        "train.diff_output_preservation_multiplier",
        "train.diff_output_preservation",
        lambda c: c.train.diff_output_preservation,
    ),
    (
        "train.blank_prompt_preservation_multiplier",
        "train.blank_prompt_preservation",
        lambda c: c.train.blank_prompt_preservation,
    ),
    (
        "train.inverted_mask_prior_multiplier",
        "train.inverted_mask_prior",
        lambda c: c.train.inverted_mask_prior,
    ),
    (
        "train.batch_size_warmup_steps",
        "train.auto_scale_batch_size",
        lambda c: c.train.auto_scale_batch_size,
    ),
    (
        "model.layer_offloading_transformer_percent",
        "model.layer_offloading",
        lambda c: c.model.layer_offloading,
    ),
    (
        "model.layer_offloading_text_encoder_percent",
        "model.layer_offloading",
        lambda c: c.model.layer_offloading,
    ),
    ("model.qtype", "model.quantize", lambda c: c.model.quantize),
    ("model.qtype_te", "model.quantize_te", lambda c: c.model.quantize_te),
    (
        "train.text_encoder_lr",
        "train.train_text_encoder",
        lambda c: c.train.train_text_encoder,
    ),
)


def _make(path: str, switch: str, active: Callable[[TrainingConfig], bool]) -> None:
    rule_id = "unused." + path.rsplit(".", 1)[-1]

    @rule(rule_id, (path,), f"{path} only works with {switch}")
    def check(ctx: Context) -> Iterator[Finding]:
        cfg = ctx.cfg
        value = get_path(cfg, path)
        if value == default_of(path) or active(cfg):
            return
        yield finding(
            rule_id,
            "suggestion",
            (path,),
            f"{path} = {value!r} has no effect unless {switch} is on; reset it to avoid "
            "confusion (or turn the switch on)",
            {path: None},
        )


for _path, _switch, _active in UNUSED:
    _make(_path, _switch, _active)
