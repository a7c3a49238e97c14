"""LoRA utilities on tiny-model LoRAs: inspect, resize, convert, merge (files and into the base)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.cli import main
from trainer.lora import io as lora_io
from trainer.lora import tools as lora_tools

PROMPT = "a photo of sks"


@pytest.fixture(scope="module")
def saved(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from test_lora_io import make_arch

    out = tmp_path_factory.mktemp("lora_tools")
    model = make_arch(demo_home, "sd15", {"linear": 8, "linear_alpha": 4}, train_te=True)
    # A trained LoRA's spectrum decays; give the random one a decaying spectrum too (row i of
    # every down matrix scaled by 0.5**i), so lower ranks keep most of it.
    with torch.no_grad():
        for comp in model.adapted_components().values():
            for name, param in comp.named_parameters():
                if "lora_A" in name:
                    decay = 0.5 ** torch.arange(param.shape[0], dtype=param.dtype)
                    param.mul_(decay.reshape(-1, *([1] * (param.dim() - 1))))
    webui, diffusers_file = lora_io.save_lora(model, out, "a", "both", "fp32")
    other = make_arch(demo_home, "sd15", {"linear": 4, "linear_alpha": 4}, train_te=True)
    # a different random LoRA of the same modules
    with torch.no_grad():
        for comp in other.adapted_components().values():
            for name, param in comp.named_parameters():
                if "lora_" in name:
                    param.mul_(-0.7).add_(0.05)
    webui_b, diffusers_b = lora_io.save_lora(other, out, "b", "both", "fp32")
    return {
        "dir": out,
        "model": model,
        "webui": webui,
        "diffusers": diffusers_file,
        "webui_b": webui_b,
        "diffusers_b": diffusers_b,
    }


@pytest.fixture(scope="module")
def pipe(saved: dict):
    from test_lora_io import fresh_pipeline

    return fresh_pipeline(saved["model"])


def generate(pipe) -> np.ndarray:
    from test_lora_io import generate as gen

    return gen(pipe)


def with_loras(pipe, paths: list[Path], weights: list[float] | None = None) -> np.ndarray:
    names = [f"t{i}" for i in range(len(paths))]
    for name, path in zip(names, paths, strict=True):
        pipe.load_lora_weights(str(path), adapter_name=name)
    pipe.set_adapters(names, weights or [1.0] * len(names))
    try:
        return generate(pipe)
    finally:
        pipe.delete_adapters(names)


def deltas(lora: lora_tools.LoraFile) -> dict[str, torch.Tensor]:
    return {name: m.delta() for name, m in lora.modules.items()}


def test_inspect_reads_layout_ranks_alphas_and_metadata(saved: dict) -> None:
    for key, layout in (("webui", "kohya"), ("diffusers", "peft")):
        info = lora_tools.inspect(saved[key])
        assert info["layout"] == layout
        assert info["ranks"] == {8: info["modules"]}
        assert info["alphas"] == {4.0: info["modules"]}
        assert info["metadata"]["trigger_word"] == "sks"
        assert info["modules"] > 10
    both = [lora_tools.inspect(saved[k])["modules"] for k in ("webui", "diffusers")]
    assert both[0] == both[1]


def test_peft_and_kohya_files_hold_the_same_deltas(saved: dict) -> None:
    kohya = lora_tools.load(saved["webui"])
    peft = lora_tools.to_kohya(lora_tools.load(saved["diffusers"]))
    assert set(kohya.modules) == set(peft.modules)
    for name, delta in deltas(kohya).items():
        torch.testing.assert_close(delta, peft.modules[name].delta(), rtol=1e-5, atol=1e-7)


def test_resize_error_falls_with_rank_and_output_stays_close(saved: dict, pipe, tmp_path) -> None:
    lora = lora_tools.load(saved["webui"])
    errors = []
    for rank in (1, 2, 4, 6, 8):
        _, stats = lora_tools.resize(lora, "rank", rank)
        errors.append(stats["mean_error"])
        assert stats["mean_rank"] == rank
    print("resize mean relative error per rank 1,2,4,6,8:", [round(e, 4) for e in errors])
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-5  # the full rank is exact
    base = generate(pipe)
    full = with_loras(pipe, [saved["webui"]])
    change = np.abs(full - base).mean()
    assert change > 1e-3
    gaps = []
    for rank in (1, 4):
        resized, stats = lora_tools.resize(lora, "rank", rank)
        path = lora_tools.save(resized, tmp_path / f"r{rank}.safetensors")
        assert lora_tools.inspect(path)["ranks"] == {rank: len(stats["ranks"])}
        gaps.append(np.abs(with_loras(pipe, [path]) - full).mean())
    print("image change from the LoRA", change, "gap after resize to rank 1, 4:", gaps)
    assert gaps[1] < gaps[0]
    assert gaps[1] < 0.1 * change


def test_cli_parser_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from trainer.cli import build_parser; build_parser(); "
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dynamic_resize_methods_pick_ranks_from_singular_values() -> None:
    s = torch.tensor([10.0, 5.0, 1.0, 0.1])
    assert lora_tools.choose_rank(s, "sv_ratio", 4, 99) == 2  # >= 10 / 4
    assert lora_tools.choose_rank(s, "sv_ratio", 200, 99) == 4
    assert lora_tools.choose_rank(s, "sv_cumulative", 0.9, 99) == 2  # 15 / 16.1 = 0.93
    assert lora_tools.choose_rank(s, "sv_cumulative", 0.95, 99) == 3
    assert lora_tools.choose_rank(s, "sv_fro", 0.99, 99) == 2  # sqrt(125/126.01) = 0.996
    assert lora_tools.choose_rank(s, "sv_fro", 0.999, 99) == 3
    assert lora_tools.choose_rank(s, "sv_ratio", 200, 3) == 3  # capped
    with pytest.raises(lora_tools.LoraToolError):
        lora_tools.choose_rank(s, "bogus", 1, 9)


def test_conversions_round_trip_exactly_and_load_in_diffusers(saved, pipe, tmp_path) -> None:
    kohya = lora_tools.load(saved["webui"])
    peft = lora_tools.to_peft(kohya, pipe)
    peft_path = lora_tools.save(peft, tmp_path / "conv")
    back = lora_tools.to_kohya(lora_tools.load(peft_path))
    assert set(back.modules) == set(kohya.modules)
    for name, m in kohya.modules.items():
        assert torch.equal(back.modules[name].down, m.down)
        assert torch.equal(back.modules[name].up, m.up)
        assert back.modules[name].alpha == m.alpha
    original = lora_tools.load(saved["diffusers"])
    assert set(lora_tools.load(peft_path).modules) == set(original.modules)
    expected = with_loras(pipe, [saved["diffusers"]])
    np.testing.assert_allclose(with_loras(pipe, [peft_path.parent]), expected, atol=1e-5)
    kohya_path = lora_tools.save(lora_tools.to_kohya(original), tmp_path / "k.safetensors")
    np.testing.assert_allclose(with_loras(pipe, [kohya_path]), expected, atol=1e-5)


def test_merged_lora_equals_applying_both(saved: dict, pipe, tmp_path: Path) -> None:
    a, b = lora_tools.load(saved["webui"]), lora_tools.load(saved["webui_b"])
    merged = lora_tools.merge([a, b], [0.7, 0.5])
    for name, delta in deltas(merged).items():
        expected = 0.7 * a.modules[name].delta() + 0.5 * b.modules[name].delta()
        torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-6)
    assert {m.rank for m in merged.modules.values()} == {12}
    path = lora_tools.save(merged, tmp_path / "m.safetensors")
    both = with_loras(pipe, [saved["webui"], saved["webui_b"]], [0.7, 0.5])
    np.testing.assert_allclose(with_loras(pipe, [path]), both, atol=1e-5)
    with pytest.raises(lora_tools.LoraToolError, match="one layout"):
        lora_tools.merge([a, lora_tools.load(saved["diffusers_b"])], [1, 1])


def test_merge_into_base_equals_the_pipeline_with_the_lora(saved, demo_home, tmp_path) -> None:
    from test_lora_io import fresh_pipeline

    expected = with_loras(fresh_pipeline(saved["model"]), [saved["webui"]])
    code = main(
        [
            "lora",
            "merge",
            str(saved["webui"]),
            "--into-base",
            "demo:sd15",
            "--home",
            str(demo_home),
            "-o",
            str(tmp_path / "fused"),
        ]
    )
    assert code == 0
    import diffusers

    fused = diffusers.StableDiffusionPipeline.from_pretrained(
        str(tmp_path / "fused"), dtype=torch.float32
    )
    fused.scheduler = diffusers.EulerDiscreteScheduler.from_config(fused.scheduler.config)
    fused.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(generate(fused), expected, atol=2e-5)


def test_cli_inspect_resize_convert_merge(saved, demo_home, tmp_path, capsys) -> None:
    assert main(["lora", "inspect", str(saved["webui"])]) == 0
    assert '"layout": "kohya"' in capsys.readouterr().out
    out = tmp_path / "r.safetensors"
    args = ["lora", "resize", str(saved["webui"]), "-o", str(out), "--method", "sv_fro"]
    assert main([*args, "--param", "0.5"]) == 0
    assert "mean error" in capsys.readouterr().out
    assert max(lora_tools.inspect(out)["ranks"]) < 8
    conv = tmp_path / "c"
    args = ["lora", "convert", str(saved["webui"]), "--to", "diffusers", "-o", str(conv)]
    assert main([*args, "--home", str(demo_home)]) == 0
    assert lora_tools.inspect(conv)["layout"] == "peft"
    merged = tmp_path / "m.safetensors"
    args = ["lora", "merge", str(saved["webui"]), str(saved["webui_b"]), "-o", str(merged)]
    assert main([*args, "--weights", "1", "0.5"]) == 0
    assert lora_tools.inspect(merged)["ranks"] == {12: lora_tools.inspect(merged)["modules"]}
    assert main(["lora", "resize", str(tmp_path / "missing.safetensors"), "-o", str(out)]) == 2


def test_sdxl_conversion_round_trips_and_loads(demo_home: Path, tmp_path: Path) -> None:
    from test_lora_io import fresh_pipeline, make_arch

    model = make_arch(demo_home, "sdxl", {}, train_te=True)
    webui, diffusers_file = lora_io.save_lora(model, tmp_path, "x", "both", "fp32")
    pipe = fresh_pipeline(model)
    kohya = lora_tools.load(webui)
    assert any(n.startswith("lora_te2_") for n in kohya.modules)
    converted = lora_tools.save(lora_tools.to_peft(kohya, pipe), tmp_path / "conv")
    peft = lora_tools.load(converted)
    assert set(peft.modules) == set(lora_tools.load(diffusers_file).modules)
    back = lora_tools.to_kohya(peft)
    for name, m in kohya.modules.items():
        assert torch.equal(back.modules[name].up, m.up) and back.modules[name].alpha == m.alpha
    expected = with_loras(pipe, [diffusers_file.parent])
    np.testing.assert_allclose(with_loras(pipe, [converted.parent]), expected, atol=1e-5)


def test_peft_layout_merge_and_dynamic_resize_load_in_diffusers(saved, pipe, tmp_path) -> None:
    a, b = lora_tools.load(saved["diffusers"]), lora_tools.load(saved["diffusers_b"])
    merged = lora_tools.save(lora_tools.merge([a, b], [1.0, -0.5]), tmp_path / "m")
    both = with_loras(pipe, [saved["diffusers"], saved["diffusers_b"]], [1.0, -0.5])
    np.testing.assert_allclose(with_loras(pipe, [merged.parent]), both, atol=1e-5)
    # sv_ratio gives different ranks per module: written as rank_pattern / alpha_pattern
    resized, stats = lora_tools.resize(a, "sv_ratio", 6)
    assert len(set(stats["ranks"].values())) > 1
    path = lora_tools.save(resized, tmp_path / "r")
    back = lora_tools.load(path)
    for name, m in resized.modules.items():
        torch.testing.assert_close(back.modules[name].delta(), m.delta())
    # diffusers builds every layer with the file's rank and scale
    from peft.tuners.lora import LoraLayer

    pipe.load_lora_weights(str(path.parent), adapter_name="dyn")
    try:
        checked = 0
        for comp in ("unet", "text_encoder"):
            for name, layer in getattr(pipe, comp).named_modules():
                if not isinstance(layer, LoraLayer) or "dyn" not in layer.r:
                    continue
                key = next(k for k in resized.modules if k.endswith("." + name))
                m = resized.modules[key]
                assert (layer.r["dyn"], layer.scaling["dyn"]) == (m.rank, m.scale), key
                checked += 1
        assert checked == len(resized.modules)
    finally:
        pipe.delete_adapters(["dyn"])
    kohya = lora_tools.save(lora_tools.to_kohya(resized), tmp_path / "r.safetensors")
    from_kohya = with_loras(pipe, [kohya])
    np.testing.assert_allclose(with_loras(pipe, [path.parent]), from_kohya, atol=1e-5)


def test_flux_bfl_file_resizes_and_loads(demo_home: Path, tmp_path: Path) -> None:
    from test_lora_io import FLUX_DOUBLE_ONLY, fresh_pipeline, make_arch

    model = make_arch(demo_home, "flux", {"target_modules": FLUX_DOUBLE_ONLY})
    webui = lora_io.save_lora(model, tmp_path, "f", "webui", "fp32")[0]
    lora = lora_tools.load(webui)
    assert any("double_blocks_0_img_attn_qkv" in n for n in lora.modules)
    lossless, stats = lora_tools.resize(lora, "sv_ratio", 1e6)  # keeps every non-zero value
    assert stats["max_error"] < 1e-5
    _, small_stats = lora_tools.resize(lora, "rank", 2)
    assert small_stats["mean_error"] > 0.1
    pipe = fresh_pipeline(model)
    full = with_loras(pipe, [webui])
    same = with_loras(pipe, [lora_tools.save(lossless, tmp_path / "l.safetensors")])
    np.testing.assert_allclose(same, full, atol=1e-4)
    with pytest.raises(lora_tools.LoraToolError, match="BFL"):
        lora_tools.to_peft(lora, pipe)


def test_output_path_is_beside_the_lora_and_never_in_checkpoints() -> None:
    job = Path("/home/studio/jobs/1a2b3c")
    out = lora_tools.output_path
    assert out(job / "lora" / "x.safetensors", "resized") == job / "outputs/x_resized.safetensors"
    assert out(job / "lora" / "x", "merged", "") == job / "outputs/x_merged"  # diffusers folder
    step = job / "checkpoints" / "step_00000020"
    assert (
        out(step / "lora" / "x.safetensors", "webui") == job / "outputs/x_step20_webui.safetensors"
    )
    assert (
        out(step / "lora_state.safetensors", "r") == job / "outputs/lora_state_step20_r.safetensors"
    )
    made = job / "outputs" / "x_resized.safetensors"
    assert out(made, "merged") == job / "outputs/x_resized_merged.safetensors"
    assert out("/data/a.safetensors", "resized") == Path("/data/outputs/a_resized.safetensors")


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("passwd", b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
         "it holds text"),
        ("empty.safetensors", b"", "it is empty"),
        ("model.ckpt", b"PK\x03\x04" + bytes(60), "it is a zip archive, or a PyTorch"),
        ("noise.safetensors", bytes(range(256)) * 2, "it does not start with a safetensors header"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_safetensors_is_named_plainly(
    tmp_path: Path, name: str, content: bytes, why: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for read in (lora_io.read_lora_keys, lora_io.read_lora_metadata, lora_tools.inspect):
        with pytest.raises(lora_io.UnreadableLora) as err:
            read(path)
        message = str(err.value)
        assert message.startswith(f"not a LoRA file: {name} is not a .safetensors LoRA ({why}")
        assert "header" not in message.replace("safetensors header", "")  # no library jargon
        assert "deserializ" not in message


def test_a_cut_short_safetensors_file_says_so(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    whole = tmp_path / "whole.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(4, 64)}, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(lora_io.UnreadableLora, match=r"cut\.safetensors is not a \.safetensors "
                       r"LoRA \(it is cut short: an interrupted download or copy\?\)"):  # fmt: skip
        lora_io.read_lora_keys(cut)
