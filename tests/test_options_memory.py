"""Memory and speed options: each test fails if its option is ignored.

How placement is proven on a CPU-only machine: the training device and the offload device are
both "cpu" here, so "on the CPU" proves nothing. The offloader therefore keeps every offloaded
weight in *designated storage* — shared-memory tensors here, pinned host memory on a CUDA machine
— and a layer computes with a fresh copy made on the training device in its forward pre-hook.
The tests look at tensor identity: between forwards the layer's weight IS the storage tensor
(same data pointer, shared memory); inside its forward it is a different, non-shared tensor on
the training device; afterwards it is the storage again. Device options (vae_device /
te_device) are proven with the "meta" device as the training device: the denoiser goes there,
while a VAE or text encoder asked to stay on "cpu" keeps real weights.

Runs go through ``trainer.engine.loop.train`` (the ``captured`` fixture keeps the run's Arch for
inspection); component tests load the tiny models with ``load_arch`` and the same
``trainer.engine.memory.prepare`` entry points the loop calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from options_support import RecordingTracker, run, tiny_config
from pydantic import ValidationError

from trainer.arch.adapters import tuner_layers
from trainer.arch.base import Arch
from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig
from trainer.engine import failures, loop
from trainer.engine.batching import batch_stream, micro_batch_plan, prefetched
from trainer.engine.context import RunContext
from trainer.engine.memory import multi_gpu, offload, prepare, prompts, quantize
from trainer.engine.optim import batch_size_at
from trainer.lora.io import read_lora_tensors, save_lora

PROVES = {
    "train.auto_scale_batch_size": "test_batch_size_warmup_follows_batch_size_at",
    "train.min_batch_size": "test_batch_size_warmup_follows_batch_size_at",
    "train.max_batch_size": "test_batch_size_warmup_follows_batch_size_at",
    "train.batch_size_warmup_steps": "test_batch_size_warmup_follows_batch_size_at",
    "train.unload_text_encoder": "test_unload_text_encoder_frees_the_encoders_and_training_goes_on",
    "model.low_vram": "test_low_vram_keeps_vae_and_text_encoders_in_offload_storage",
    "model.layer_offloading": [
        "test_layer_offloading_keeps_a_share_of_layers_in_offload_storage",
        "test_offloaded_run_trains_exactly_like_the_resident_one",
    ],
    "model.layer_offloading_transformer_percent": (
        "test_layer_offloading_keeps_a_share_of_layers_in_offload_storage"
    ),
    "model.layer_offloading_text_encoder_percent": (
        "test_layer_offloading_keeps_a_share_of_layers_in_offload_storage"
    ),
    "model.quantize": [
        "test_float8_base_is_stored_in_float8_and_still_trains",
        "test_bitsandbytes_base_is_stored_in_int8_or_4bit_and_still_trains",
    ],
    "model.qtype": [
        "test_float8_base_is_stored_in_float8_and_still_trains",
        "test_bitsandbytes_base_is_stored_in_int8_or_4bit_and_still_trains",
        "test_bitsandbytes_names_a_device_it_cannot_serve",
        "test_schema_refuses_memory_combinations_that_cannot_work",
    ],
    "model.quantize_te": "test_quantize_te_stores_the_text_encoders_in_float8",
    "model.qtype_te": "test_quantize_te_stores_the_text_encoders_in_float8",
    "model.compile": "test_compile_runs_the_denoiser_through_torch_compile",
    "model.attention_backend": [
        "test_attention_backend_routes_attention_through_the_chosen_kernel",
        "test_gpu_only_attention_backends_are_refused_here",
    ],
    "model.vae_device": "test_vae_and_text_encoder_devices_are_honoured",
    "model.te_device": "test_vae_and_text_encoder_devices_are_honoured",
    "model.vae_dtype": "test_vae_and_text_encoder_dtypes_change_the_components",
    "model.te_dtype": "test_vae_and_text_encoder_dtypes_change_the_components",
    "model.vae_path": "test_vae_path_loads_a_different_vae",
    "model.te_name_or_path": "test_te_name_or_path_loads_a_different_text_encoder",
    "model.accuracy_recovery_adapter": (
        "test_accuracy_recovery_adapter_is_frozen_under_the_trained_lora"
    ),
    "model.split_model_over_gpus": "test_split_model_over_gpus_spreads_blocks_or_is_refused",
    "runtime.num_processes": [
        "test_num_processes_must_match_the_processes_launched",
        "tests/test_distributed.py::test_two_ranks_train_disjoint_shards_and_stay_identical",
        "tests/test_distributed.py::test_the_studio_launches_two_processes_stops_and_resumes_one_run",
    ],
    "runtime.gpu_prefetch_batches": "test_prefetch_yields_the_same_batches_in_order_ahead_of_use",
    "runtime.num_workers": "test_num_workers_load_batches_in_worker_processes",
    "runtime.persistent_workers": "test_persistent_workers_live_across_epochs",
}

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def baseline(demo_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """The default 2-step sd15 run every exactness test compares with."""
    return run(tiny_config(), demo_home, tmp_path_factory.mktemp("baseline"))[1]


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Arch]:
    """The Arch of each run this test starts (recorded when the loop prepares it)."""
    archs: list[Arch] = []
    original = loop.prepare_training

    def recording(arch: Arch, cfg: TrainingConfig):
        archs.append(arch)
        return original(arch, cfg)

    monkeypatch.setattr(loop, "prepare_training", recording)
    return archs


def cfg_for(arch: str = "sd15", network: dict | None = None, **model: Any) -> TrainingConfig:
    return tiny_config(
        model={"arch": arch, "name_or_path": f"demo:{arch}", **model},
        network={"linear": 4, "linear_alpha": 4, **(network or {})},
    )


def build(cfg: TrainingConfig, home: Path, device: torch.device = CPU) -> tuple[Arch, dict]:
    """Load, prepare and add adapters the way the loop does (seeded adapter init)."""
    arch = load_arch(cfg, home, device, torch.float32)
    prepare.prepare_base(arch, cfg)
    torch.manual_seed(0)
    groups = arch.add_lora(cfg.network)
    prepare.prepare_training(arch, cfg)
    return arch, groups


def step(arch: Arch, backward: bool = True) -> float:
    """One fixed noise-prediction loss (and its backward) on arbitrary latents."""
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, arch.vae.config.latent_channels, 8, 8, generator=gen)
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.tensor([100.0, 700.0]) if arch.is_flow else torch.tensor([100, 700])
    cond = arch.encode_prompts(["a red circle", "a blue square"])
    pred = arch.predict(arch.add_noise(latents, noise, t), t, cond, {})
    loss = (pred.float() - arch.target(latents, noise, t)).pow(2).mean()
    if backward:
        loss.backward()
    return loss.item()


def lora_up_moved(arch: Arch) -> bool:
    """peft's LoRA up/B weights start at zero: any non-zero one received gradients."""
    return any(
        p.abs().sum() > 0
        for name, p in arch.denoiser.named_parameters()
        if "lora_B.default" in name
    )


def demo_data(cfg: TrainingConfig, home: Path, job: Path):
    ctx = RunContext(home=home, job_dir=job, tracker=RecordingTracker())
    return loop.prepare_data(cfg, ctx)


def first(stream, n: int) -> list[dict]:
    return [next(stream) for _ in range(n)]


# ---------------------------------------------------------------------------- quantization
def test_float8_base_is_stored_in_float8_and_still_trains(
    demo_home: Path, tmp_path: Path, baseline, captured
) -> None:
    plain = load_arch(cfg_for(), demo_home, CPU, torch.float32)
    cfg = cfg_for(quantize=True, qtype="float8")
    _, rec = run(cfg, demo_home, tmp_path / "job")
    arch = captured[0]
    layers = [m for m in arch.denoiser.modules() if isinstance(m, quantize.Float8Linear)]
    convs = [m for m in arch.denoiser.modules() if isinstance(m, quantize.Float8Conv2d)]
    assert len(layers) > 30 and len(convs) > 10
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in layers + convs)
    # Every eligible layer was converted; none is left in fp32 behind a LoRA wrapper.
    left = quantize.quantizable_layers(arch.denoiser, (torch.nn.Linear, torch.nn.Conv2d))
    assert not [n for n, m in left if "lora_" not in n and not quantize.is_quantized(m)]
    report = arch.memory_report.quantized[0]
    assert report.bytes_after < 0.3 * report.bytes_before  # fp32 -> 1 byte + a scale per row
    assert report.bytes_before == quantize.parameter_bytes(plain.denoiser)
    # Trains: losses are finite and close to, but not the same as, full precision.
    assert rec.losses() != baseline.losses()
    assert rec.losses() == pytest.approx(baseline.losses(), rel=0.05)
    assert lora_up_moved(arch)
    assert all(p.dtype == torch.float32 for n, p in arch.denoiser.named_parameters() if "lora" in n)


@pytest.mark.parametrize(("qtype", "dtype"), [("int8", torch.int8), ("nf4", torch.uint8)])
def test_bitsandbytes_base_is_stored_in_int8_or_4bit_and_still_trains(
    demo_home: Path, qtype: str, dtype: torch.dtype
) -> None:
    import bitsandbytes as bnb

    arch, _ = build(cfg_for(quantize=True, qtype=qtype), demo_home)
    kind = bnb.nn.Linear8bitLt if qtype == "int8" else bnb.nn.Linear4bit
    quantized = [m for m in arch.denoiser.modules() if isinstance(m, kind)]
    assert len(quantized) == arch.memory_report.quantized[0].layers > 30
    assert all(m.weight.dtype == dtype for m in quantized)
    report = arch.memory_report.quantized[0]
    assert report.bytes_after < report.bytes_before  # convolutions stay fp32 in bitsandbytes
    loss = step(arch)
    assert 0 < loss < 10
    ups = [p for n, p in arch.denoiser.named_parameters() if "lora_B.default" in n]
    assert ups and all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)


def test_bitsandbytes_names_a_device_it_cannot_serve() -> None:
    # "mps" cannot be used on this machine: the probe fails and the message names the device.
    with pytest.raises(failures.MemoryOptionError, match=r"cannot run nf4 on the mps device"):
        quantize.probe_bitsandbytes("nf4", torch.device("mps"), "model.qtype")


def test_quantize_te_stores_the_text_encoders_in_float8(demo_home: Path) -> None:
    plain = load_arch(cfg_for("sdxl"), demo_home, CPU, torch.float32)
    quant, _ = build(cfg_for("sdxl", quantize_te=True, qtype_te="float8"), demo_home)
    for name, te in quant.text_encoders.items():
        linears = [m for m in te.modules() if isinstance(m, quantize.Float8Linear)]
        assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
        assert quantize.parameter_bytes(te) < quantize.parameter_bytes(plain.text_encoders[name])
    assert not any(isinstance(m, quantize.Float8Linear) for m in quant.denoiser.modules())
    a = plain.encode_prompts(["a red circle"])["prompt_embeds"]
    b = quant.encode_prompts(["a red circle"])["prompt_embeds"]
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


# ------------------------------------------------------------------------------- offloading
def test_layer_offloading_keeps_a_share_of_layers_in_offload_storage(demo_home: Path) -> None:
    cfg = cfg_for(
        layer_offloading=True,
        layer_offloading_transformer_percent=0.5,
        layer_offloading_text_encoder_percent=1.0,
    )
    arch, _ = build(cfg, demo_home)
    den, te = arch.offloaders["denoiser"], arch.offloaders["text_encoder"]
    candidates = offload.offload_units(arch.denoiser)
    assert len(den.units) == round(0.5 * len(candidates)) > 10
    assert len(te.units) == len(offload.offload_units(arch.pipe.text_encoder))
    managed = {id(p) for unit in den.units for p in unit.parameters() if not p.requires_grad}
    resident = [p for p in arch.denoiser.parameters() if id(p) not in managed]
    trainable = [p for p in arch.denoiser.parameters() if p.requires_grad]
    # Between forwards: every offloaded weight IS its storage tensor (shared memory here).
    assert den.in_storage() and te.in_storage()
    assert all(stored.is_shared() for stored in den.storage.values())
    assert trainable and not any(p.is_shared() for p in resident)  # LoRA and the other half

    def base(unit):
        return unit.get_base_layer() if hasattr(unit, "get_base_layer") else unit

    stored = {id(unit): den.storage[offload._slot_key(base(unit), "weight")] for unit in den.units}
    seen: list[tuple[bool, bool, torch.device]] = []

    def inside(unit, _args):  # registered after the offloader's hook: sees what the layer uses
        weight = base(unit).weight
        fresh = weight.data_ptr() != stored[id(unit)].data_ptr()
        seen.append((fresh, weight.is_shared(), weight.device))

    handles = [unit.register_forward_pre_hook(inside) for unit in den.units]
    before = den.onloads
    step(arch)
    for handle in handles:
        handle.remove()
    assert len(seen) >= len(den.units) and den.onloads - before >= len(den.units)
    assert all(fresh and not shared and device == arch.device for fresh, shared, device in seen)
    assert den.in_storage() and te.in_storage()  # back in storage after the forward
    # A smaller share offloads fewer layers.
    quarter = cfg_for(layer_offloading=True, layer_offloading_transformer_percent=0.25)
    fewer, _ = build(quarter, demo_home)
    assert len(fewer.offloaders["denoiser"].units) == round(0.25 * len(candidates))


def test_offloaded_run_trains_exactly_like_the_resident_one(
    demo_home: Path, tmp_path: Path, baseline, captured
) -> None:
    cfg = tiny_config(model={"layer_offloading": True, "layer_offloading_transformer_percent": 0.5})
    _, rec = run(cfg, demo_home, tmp_path / "job")
    assert rec.losses() == baseline.losses()  # copies of the same weights: bit-identical
    offloader = captured[0].offloaders["denoiser"]
    assert offloader.onloads > 0 and offloader.in_storage()


def test_low_vram_keeps_vae_and_text_encoders_in_offload_storage(demo_home: Path) -> None:
    plain = load_arch(cfg_for(), demo_home, CPU, torch.float32)
    arch, _ = build(cfg_for(low_vram=True), demo_home)
    vae, te = arch.offloaders["vae"], arch.offloaders["text_encoder"]
    assert all(p.is_shared() for p in arch.vae.parameters())
    assert all(p.is_shared() for p in arch.pipe.text_encoder.parameters())
    assert not any(p.is_shared() for p in arch.denoiser.parameters())
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(arch.encode_images(pixels), plain.encode_images(pixels))
    embeds = arch.encode_prompts(["a red circle"])["prompt_embeds"]
    assert torch.equal(embeds, plain.encode_prompts(["a red circle"])["prompt_embeds"])
    assert vae.onloads > 0 and te.onloads > 0 and vae.in_storage() and te.in_storage()


# --------------------------------------------------------------------------------- compile
@pytest.mark.slow  # dynamo traces the tiny U-Net forward and backward: ~10 s here
def test_compile_runs_the_denoiser_through_torch_compile(
    demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graphs: list[int] = []

    def counting_backend(gm, _example_inputs):  # inductor would take minutes on this CPU
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    monkeypatch.setattr(prepare, "COMPILE_BACKEND", counting_backend)
    eager, _ = build(cfg_for(), demo_home)
    compiled, groups = build(cfg_for(compile=True), demo_home)
    assert compiled.denoiser._compiled_call_impl is not None
    assert eager.denoiser._compiled_call_impl is None
    assert step(compiled) == pytest.approx(step(eager), rel=1e-5)
    assert graphs and max(graphs) > 100  # the denoiser's graph went through the backend
    assert all(p.grad is not None for p in groups["unet"])  # backward through it works


# ------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("arch_name", ["sd15", "flux"])
def test_attention_backend_routes_attention_through_the_chosen_kernel(
    demo_home: Path, monkeypatch: pytest.MonkeyPatch, arch_name: str
) -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    registry = _AttentionBackendRegistry._backends
    calls: dict[str, int] = {}
    for name, fn in list(registry.items()):

        def counted(*args, _fn=fn, _name=name.value, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _fn(*args, **kwargs)

        monkeypatch.setitem(registry, name, counted)
    global_before = _AttentionBackendRegistry._active_backend
    outputs = {}
    for choice in ("auto", "native", "math"):
        arch = load_arch(
            cfg_for(arch_name, attention_backend=choice), demo_home, CPU, torch.float32
        )
        prepare.prepare_base(arch, arch.cfg)
        calls.clear()
        outputs[choice] = step(arch, backward=False)
        if choice == "math":
            assert calls.get("_native_math", 0) > 0 and "native" not in calls
        elif choice == "native":
            assert calls.get("native", 0) > 0 and "_native_math" not in calls
        elif arch_name == "sd15":  # the U-Net's own processor calls SDPA without the dispatcher
            assert not calls
    assert _AttentionBackendRegistry._active_backend == global_before  # no process-wide change
    assert global_before == AttentionBackendName.NATIVE
    assert outputs["math"] == pytest.approx(outputs["auto"], rel=1e-5)


def test_gpu_only_attention_backends_are_refused_here(demo_home: Path) -> None:
    for choice in ("flash", "xformers", "sage"):
        with pytest.raises(ValidationError, match="needs an NVIDIA GPU"):
            tiny_config(model={"attention_backend": choice}, runtime={"device": "cpu"})
        cfg = tiny_config(model={"attention_backend": choice})  # device auto: refused at start
        with pytest.raises(failures.MemoryOptionError, match=f"'{choice}' needs .* NVIDIA GPU"):
            prepare.check_environment(cfg, CPU)


# ------------------------------------------------------------------- components and devices
def test_vae_and_text_encoder_dtypes_change_the_components(demo_home: Path) -> None:
    plain = load_arch(cfg_for(), demo_home, CPU, torch.float32)
    half = load_arch(cfg_for(vae_dtype="bf16", te_dtype="bf16"), demo_home, CPU, torch.float32)
    assert {p.dtype for p in half.vae.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.pipe.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.denoiser.parameters()} == {torch.float32}
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    z_half, z_plain = half.encode_images(pixels), plain.encode_images(pixels)
    assert z_half.dtype == torch.float32 and not torch.equal(z_half, z_plain)  # bf16 rounding
    assert torch.allclose(z_half, z_plain, atol=0.05)
    e_half = half.encode_prompts(["a red circle"])["prompt_embeds"]
    assert e_half.dtype == torch.float32
    assert not torch.equal(e_half, plain.encode_prompts(["a red circle"])["prompt_embeds"])


def test_vae_and_text_encoder_devices_are_honoured(demo_home: Path) -> None:
    meta = torch.device("meta")  # a training device no weight could silently share with "cpu"
    kept = load_arch(cfg_for(vae_device="cpu", te_device="cpu"), demo_home, meta, torch.float32)
    moved = load_arch(cfg_for(), demo_home, meta, torch.float32)
    assert next(kept.denoiser.parameters()).device == meta
    assert next(kept.vae.parameters()).device == CPU
    assert next(kept.pipe.text_encoder.parameters()).device == CPU
    assert next(moved.vae.parameters()).device == meta  # "auto" follows the training device
    assert next(moved.pipe.text_encoder.parameters()).device == meta
    # The VAE really encodes on the CPU (real numbers), then hands latents to the training device.
    latents = kept.encode_images(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert latents.device == meta and latents.shape == (1, 4, 8, 8)
    # A device this machine lacks is refused before loading, naming the option.
    with pytest.raises(failures.MemoryOptionError, match=r"model\.vae_device is 'cuda'"):
        prepare.check_environment(cfg_for(vae_device="cuda"), CPU)
    with pytest.raises(failures.MemoryOptionError, match=r"model\.te_device is 'mps'"):
        prepare.check_environment(cfg_for(te_device="mps"), CPU)


def test_vae_path_loads_a_different_vae(demo_home: Path, tmp_path: Path) -> None:
    from trainer.demo.tiny import _vae

    own = load_arch(cfg_for(), demo_home, CPU, torch.float32)
    other_vae = _vae(123, latent_channels=4, scaling_factor=0.18215, shift_factor=None)
    other_vae.save_pretrained(tmp_path / "vae")
    swapped = load_arch(cfg_for(vae_path=str(tmp_path / "vae")), demo_home, CPU, torch.float32)
    for name, tensor in other_vae.state_dict().items():
        assert torch.equal(swapped.vae.state_dict()[name], tensor)
    assert not torch.equal(swapped.vae.encoder.conv_in.weight, own.vae.encoder.conv_in.weight)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    assert not torch.allclose(swapped.encode_images(pixels), own.encode_images(pixels))
    assert swapped.fingerprint() != own.fingerprint()  # cached latents are not shared


def test_te_name_or_path_loads_a_different_text_encoder(demo_home: Path, tmp_path: Path) -> None:
    from trainer.demo.tiny import _clip_text_model

    own = load_arch(cfg_for(), demo_home, CPU, torch.float32)
    other = _clip_text_model(7, "text_encoder", 32)
    other.save_pretrained(tmp_path / "te")
    swapped = load_arch(
        cfg_for(te_name_or_path=str(tmp_path / "te")), demo_home, CPU, torch.float32
    )
    for name, tensor in other.state_dict().items():
        assert torch.equal(swapped.pipe.text_encoder.state_dict()[name], tensor)
    a = swapped.encode_prompts(["a red circle"])["prompt_embeds"]
    b = own.encode_prompts(["a red circle"])["prompt_embeds"]
    assert a.shape == b.shape and not torch.allclose(a, b)


# ------------------------------------------------------------------------------------ ARA
def test_accuracy_recovery_adapter_is_frozen_under_the_trained_lora(
    demo_home: Path, tmp_path: Path, baseline, captured
) -> None:
    source, groups = build(cfg_for(), demo_home)
    with torch.no_grad():
        for param in groups["unet"]:
            param.add_(torch.randn_like(param) * 0.2)
    ara_file = save_lora(source, tmp_path / "ara", "ara", "diffusers", "fp32")[0]
    ara_weights = read_lora_tensors(ara_file)

    outcome, rec = run(
        tiny_config(model={"accuracy_recovery_adapter": str(ara_file)}), demo_home, tmp_path / "job"
    )
    arch = captured[0]
    ara = {n: p for n, p in arch.denoiser.named_parameters() if ".ara." in n}
    assert ara and not any(p.requires_grad for p in ara.values())
    # Frozen: the adapter still holds exactly the file's weights after training.
    for name, param in ara.items():
        key = "unet." + name.replace(".ara.", ".")
        assert torch.equal(param.detach(), ara_weights[key].to(param.dtype)), name
    # Active under the trained LoRA: the very first loss already differs from the plain run.
    assert rec.losses()[0] != baseline.losses()[0]
    assert lora_up_moved(arch)
    layer = next(layer for _, layer in tuner_layers(arch.denoiser))
    assert set(layer.active_adapters) == {"ara", "default"}
    with arch.lora_scale(0.0):  # previews without the LoRA keep the recovery adapter on
        assert layer.active_adapters == ["ara"]
    assert set(layer.active_adapters) == {"ara", "default"}
    # Never saved: the LoRA file has the same keys as the plain run's.
    plain_keys = set(read_lora_tensors(next(Path(p) for p, _ in baseline.artifacts)))
    assert set(read_lora_tensors(outcome.lora_files[0])) == plain_keys


# -------------------------------------------------------------------- refusals (no devices)
def test_split_model_over_gpus_spreads_blocks_or_is_refused(demo_home: Path) -> None:
    flux = {"arch": "flux", "name_or_path": "demo:flux", "split_model_over_gpus": True}
    with pytest.raises(ValidationError, match="split_model_over_gpus"):
        tiny_config(model=flux, runtime={"device": "cpu"})
    cfg = cfg_for("flux", split_model_over_gpus=True)
    with pytest.raises(
        failures.MemoryOptionError, match=r"at least 2 CUDA GPUs; this machine has 0"
    ):
        prepare.check_environment(cfg, CPU)
    # The split itself (accelerate's dispatch_model) on stand-in devices: blocks in order, same
    # output. Real GPUs are not available here; this runs the same code with two CPU slots.
    arch = load_arch(cfg_for("flux"), demo_home, CPU, torch.float32)
    gen = torch.Generator().manual_seed(0)
    latents, t = torch.randn(1, 16, 8, 8, generator=gen), torch.tensor([300.0])
    cond = arch.encode_prompts(["a red circle"])
    before = arch.predict(latents, t, cond, {})
    plan = multi_gpu.split_plan([f"b{i}" for i in range(5)], ["gpu0", "gpu1"])
    assert list(plan.values()) == ["gpu0", "gpu0", "gpu0", "gpu1", "gpu1"]
    device_map = multi_gpu.split_over_devices(arch.denoiser, [CPU, CPU])
    assert "transformer_blocks.0" in device_map and "single_transformer_blocks.0" in device_map
    assert torch.equal(arch.predict(latents, t, cond, {}), before)


def test_num_processes_must_match_the_processes_launched() -> None:
    # Valid in the schema (the studio launches it through accelerate; tests/test_distributed.py
    # trains on 2 processes); the trainer refuses a count that differs from what was launched.
    cfg = tiny_config(runtime={"num_processes": 2})
    with pytest.raises(failures.MemoryOptionError, match=r"is 2 but 1 process.*accelerate launch"):
        prepare.check_environment(cfg, CPU)
    prepare.check_environment(cfg, CPU, processes=2)
    with pytest.raises(failures.MemoryOptionError, match="one CUDA GPU each; this machine has 0"):
        prepare.check_environment(cfg, torch.device("cuda"), processes=2)
    flux = {"arch": "flux", "name_or_path": "demo:flux", "split_model_over_gpus": True}
    with pytest.raises(ValidationError, match="several data-parallel processes"):
        tiny_config(model=flux, runtime={"num_processes": 2, "device": "cuda"})
    with pytest.raises(ValidationError, match="MPS is one device"):
        tiny_config(runtime={"num_processes": 2, "device": "mps"})


def test_schema_refuses_memory_combinations_that_cannot_work() -> None:
    cases = [
        ({"model": {"quantize": True, "qtype": "float8"}, "network": {"type": "dora"}}, "DoRA"),
        ({"model": {"quantize": True, "qtype": "nf4"}, "network": {"type": "lokr"}}, "4-bit"),
        ({"model": {"quantize": True, "qtype": "nf4", "compile": True}}, "4-bit weights"),
        ({"model": {"quantize": True, "qtype": "int8", "layer_offloading": True}}, "offloading"),
        ({"model": {"quantize_te": True, "qtype_te": "int8", "low_vram": True}}, "offloaded"),
        ({"model": {"accuracy_recovery_adapter": "x"}, "network": {"type": "loha"}}, "peft"),
        ({"train": {"unload_text_encoder": True}}, "cache_text_embeddings"),
    ]
    for sections, message in cases:
        with pytest.raises(ValidationError, match=message):
            tiny_config(**sections)
    tiny_config(model={"quantize": True, "qtype": "float8"}, network={"type": "lokr"})  # fine


# --------------------------------------------------------------------------- batch warmup
def test_batch_size_warmup_follows_batch_size_at(demo_home: Path, tmp_path: Path, baseline) -> None:
    train = {
        "steps": 6,
        "auto_scale_batch_size": True,
        "min_batch_size": 1,
        "max_batch_size": 4,
        "batch_size_warmup_steps": 4,
    }
    cfg = tiny_config(train=train)
    _, rec = run(cfg, demo_home, tmp_path / "job")
    logged = [rec.metrics[s]["batch_size"] for s in sorted(rec.metrics)]
    assert logged == [batch_size_at(cfg.train, s) for s in range(6)] == [1, 1, 2, 3, 4, 4]
    assert [baseline.metrics[s]["batch_size"] for s in sorted(baseline.metrics)] == [2, 2]
    # With gradient accumulation each micro-batch of a step has the step's size; a resumed plan
    # is the same plan with the done micro-batches skipped.
    accum = tiny_config(train={**train, "gradient_accumulation_steps": 2})
    data = demo_data(accum, demo_home, tmp_path / "data")
    plan = micro_batch_plan(data, accum.train)
    sizes = [len(next(plan)[1]) for _ in range(12)]
    assert sizes == [batch_size_at(accum.train, i // 2) for i in range(12)]
    whole = micro_batch_plan(data, accum.train)
    done = [next(whole) for _ in range(5)]
    resumed = micro_batch_plan(data, accum.train, start=5)
    assert [next(resumed) for _ in range(6)] == [next(whole) for _ in range(6)]
    for _, keys in done:  # every micro-batch shares one bucket
        assert len({data.entries[k[1]].bucket for k in keys}) == 1


# ------------------------------------------------------------------------- unload encoders
def test_unload_text_encoder_frees_the_encoders_and_training_goes_on(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured
) -> None:
    refs: list = []
    original = prompts.release_text_encoders

    def recording(*args, **kwargs):
        refs.extend(original(*args, **kwargs))
        return refs

    monkeypatch.setattr(prompts, "release_text_encoders", recording)
    sample = {"sample_every": 1, "prompts": ["[trigger] circle"], "sample_steps": 2}
    sample.update(width=64, height=64)
    kept_cfg = tiny_config(train={"cache_text_embeddings": True}, sample=sample)
    unload_cfg = tiny_config(
        train={"cache_text_embeddings": True, "unload_text_encoder": True}, sample=sample
    )
    _, kept = run(kept_cfg, demo_home, tmp_path / "kept")
    _, freed = run(unload_cfg, demo_home, tmp_path / "freed")
    arch = captured[1]
    assert arch.pipe.text_encoder is None and arch.text_encoders == {}
    assert refs and all(ref() is None for ref in refs)  # nothing holds the encoder any more
    assert "" in arch.prompt_store and "sks circle" in arch.prompt_store
    # Training continued on the cached embeddings: the same losses as with the encoder kept.
    assert freed.losses() == kept.losses()
    # Previews after the unload used the stored prompt embeddings: the same images.
    images = lambda rec: [(s, list(img.getdata())) for _, s, _, img in rec.images]  # noqa: E731
    assert [s for s, _ in images(freed)] == [0, 1, 2]
    assert images(freed) == images(kept)
    with pytest.raises(failures.MemoryOptionError, match="unload_text_encoder"):
        arch.encode_prompts(["a prompt nobody planned"])


# --------------------------------------------------------------------------------- loading
def test_prefetch_yields_the_same_batches_in_order_ahead_of_use(
    demo_home: Path, tmp_path: Path, baseline
) -> None:
    cfg = tiny_config(runtime={"gpu_prefetch_batches": 2})
    data = demo_data(cfg, demo_home, tmp_path / "data")
    plain = batch_stream(data, tiny_config(), 0, CPU)
    ahead = batch_stream(data, cfg, 0, CPU)
    for _ in range(8):  # crosses an epoch boundary (6 batches per epoch)
        a, b = next(plain), next(ahead)
        assert a["keys"] == b["keys"] and torch.equal(a["pixels"], b["pixels"])
    pulled: list[int] = []

    def source():
        for i in range(10):
            pulled.append(i)
            yield {"i": i, "x": torch.zeros(1)}

    stream = prefetched(source(), 2, CPU)
    assert next(stream)["i"] == 0 and len(pulled) == 3  # two batches were ready ahead
    assert [b["i"] for b in stream] == list(range(1, 10))
    _, rec = run(cfg, demo_home, tmp_path / "job")
    assert rec.losses() == baseline.losses()


def test_num_workers_load_batches_in_worker_processes(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, baseline
) -> None:
    cfg = tiny_config(runtime={"num_workers": 2})
    data = demo_data(cfg, demo_home, tmp_path / "data")
    inline = first(batch_stream(data, tiny_config(), 0), 4)
    workers = first(batch_stream(data, cfg, 0), 4)
    assert {b["loader_pid"] for b in inline} == {os.getpid()}
    assert os.getpid() not in {b["loader_pid"] for b in workers}
    assert {b["loader_worker"] for b in workers} == {0, 1}
    assert [b["keys"] for b in workers] == [b["keys"] for b in inline]
    # The loop's batches come from the workers too, and train exactly the same.
    pids: list[int] = []
    original = loop.compute_loss

    def recording(arch, inputs, batch, *args, **kwargs):
        pids.append(batch["loader_pid"])
        return original(arch, inputs, batch, *args, **kwargs)

    monkeypatch.setattr(loop, "compute_loss", recording)
    _, rec = run(tiny_config(runtime={"num_workers": 1}), demo_home, tmp_path / "job")
    assert pids and os.getpid() not in pids
    assert rec.losses() == baseline.losses()


def test_persistent_workers_live_across_epochs(demo_home: Path, tmp_path: Path) -> None:
    def worker_pids(persistent: bool) -> tuple[list[set[int]], list]:
        cfg = tiny_config(runtime={"num_workers": 1, "persistent_workers": persistent})
        data = demo_data(cfg, demo_home, tmp_path / f"data{persistent}")
        per_epoch = data.batches_per_epoch
        stream = batch_stream(data, cfg, 0)
        batches = [next(stream) for _ in range(3 * per_epoch)]
        epochs = [batches[i * per_epoch : (i + 1) * per_epoch] for i in range(3)]
        return [{b["loader_pid"] for b in epoch} for epoch in epochs], [b["keys"] for b in batches]

    kept, keys_kept = worker_pids(True)
    fresh, keys_fresh = worker_pids(False)
    assert all(len(pids) == 1 for pids in kept + fresh)
    assert len(set().union(*kept)) == 1  # one worker process served all three epochs
    assert len(set().union(*fresh)) == 3  # a new worker each epoch
    assert keys_kept == keys_fresh
