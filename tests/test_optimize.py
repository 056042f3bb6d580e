"""``optimize_`` and ``accel optimize``: the swaps happen, the kernels run inside real diffusers
models (under TRITON_INTERPRET=1 on CPU), the outputs match the original, artifacts reload, bad
input fails cleanly."""

import copy
import json
import warnings

import pytest
import torch

import accel
from accel.measure.optimize import PARITY_TIMESTEPS, PARITY_TOLERANCE, output_parity
from accel.metrics.size import count_macs
from accel.optimize.apply import kernel_usage
from accel.optimize.cuda_graph import CudaGraphHook
from accel.optimize.modules import FusedAttnProcessor, FusedGroupNorm, FusedResnetBlock2D
from conftest import make_tiny_unet
from conftest import run_cli as run

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_text_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)  # head dim 16 (the kernel's minimum): 32 channels / 2 heads
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=(1, 2),
        norm_num_groups=4,
    ).eval()


def _pair(module):
    original = accel.load(module, DEVICE)
    optimized = accel.load(module.__class__.from_config(module.config), DEVICE)
    optimized.module.load_state_dict(module.state_dict())
    return original, optimized


@pytest.mark.parametrize(
    "make",
    [lambda: make_tiny_unet(attention_head_dim=16), make_text_unet],
    ids=["unet", "text-unet"],
)
@pytest.mark.slow
def test_kernels_run_inside_the_model_and_match_the_original(make):
    original, optimized = _pair(make())
    record = accel.optimize_(optimized, accel.OptimizeConfig(dtype="fp16", backend="triton"))
    assert record["swaps"]["resnet_blocks"] >= 4 and record["swaps"]["attention"] >= 2
    assert record["swaps"]["output_norm_silu"] == 1
    parity = output_parity(original, optimized)
    assert parity["met"], parity
    # fp16 changed something: the comparison is not of a model with itself
    assert parity["rel_rms"] > 0
    usage = kernel_usage(optimized.module)
    assert usage["group_norm"]["triton"] > 0 and usage["group_norm"]["torch"] == 0
    assert usage["attention"]["triton"] > 0 and usage["attention"]["torch"] == 0


def test_every_group_norm_and_attention_is_swapped():
    from diffusers.models.resnet import ResnetBlock2D

    original, optimized = _pair(make_tiny_unet(attention_head_dim=16))
    accel.optimize_(optimized, accel.OptimizeConfig(dtype="fp32", backend="torch"))
    modules = list(optimized.module.modules())
    assert not any(type(m) is torch.nn.GroupNorm for m in modules)
    resnets = sum(type(m) is ResnetBlock2D for m in original.module.modules())
    assert resnets > 0 and sum(isinstance(m, FusedResnetBlock2D) for m in modules) == resnets
    assert all(
        isinstance(m.processor, FusedAttnProcessor) for m in modules if hasattr(m, "processor")
    )
    assert optimized.module.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_fused_resnet_block_matches_diffusers_exactly_in_fp32():
    """The fused forward (time embedding added inside norm2) computes what diffusers' forward
    computes."""
    original, optimized = _pair(make_tiny_unet(attention_head_dim=16))
    accel.optimize_(
        optimized, accel.OptimizeConfig(dtype="fp32", backend="triton", channels_last=False)
    )
    parity = output_parity(original, optimized)
    assert parity["rel_rms"] < PARITY_TOLERANCE[torch.float32], parity


def test_dit_attention_runs_through_the_kernel():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()
    original, optimized = _pair(dit)
    accel.optimize_(optimized, accel.OptimizeConfig(dtype="fp16", backend="triton"))
    assert output_parity(original, optimized)["met"]
    assert kernel_usage(optimized.module)["attention"]["triton"] > 0


@pytest.mark.slow
def test_unsupported_head_dim_falls_back_with_one_warning():
    """Head dim 8 is below the kernel's minimum: the reference computes it, and says so once."""
    original, optimized = _pair(make_tiny_unet())  # attention_head_dim=8
    accel.optimize_(optimized, accel.OptimizeConfig(dtype="fp16", backend="triton"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert output_parity(original, optimized)["met"]
    assert len([w for w in caught if "head_dim 8" in str(w.message)]) == 1
    usage = kernel_usage(optimized.module)
    attention_modules = sum(hasattr(m, "processor") for m in optimized.module.modules())
    calls = len(PARITY_TIMESTEPS) * attention_modules
    assert usage["attention"] == {"triton": 0, "torch": calls} and usage["group_norm"]["triton"] > 0


@pytest.mark.skipif(
    DEVICE == "cuda", reason="on CUDA the auto backend uses the kernels (tested above)"
)
def test_auto_backend_on_cpu_uses_the_reference():
    _, optimized = _pair(make_tiny_unet(attention_head_dim=16))
    accel.optimize_(optimized)
    optimized(*optimized.example_inputs(2))
    usage = kernel_usage(optimized.module)
    assert usage["group_norm"]["triton"] == 0 and usage["group_norm"]["torch"] > 0
    assert optimized.dtype == torch.float32  # auto precision stays fp32 off CUDA


def test_optimized_artifact_reloads_with_the_same_outputs(tmp_path):
    _, optimized = _pair(make_tiny_unet(attention_head_dim=16))
    accel.optimize_(optimized, accel.OptimizeConfig(dtype="fp16", backend="torch"))
    accel.save(optimized, tmp_path / "fast")
    reloaded = accel.load(tmp_path / "fast", DEVICE)
    assert reloaded.dtype == torch.float16
    assert isinstance(reloaded.module.conv_norm_out, FusedGroupNorm)
    inputs = optimized.example_inputs(2)
    assert torch.equal(optimized(*inputs), reloaded(*inputs))


def test_cuda_graph_replay_survives_a_reload_and_a_copy(tmp_path):
    """Saved with --cuda-graph (written here by hand: capture needs a GPU), the reloaded model
    replays again once on one; a copy starts with no captured graphs of its own."""
    model = accel.load(make_tiny_unet())
    accel.optimize_(model, accel.OptimizeConfig(backend="torch"))
    accel.save(model, tmp_path / "fast")
    record_path = tmp_path / "fast" / "accel.json"
    record = json.loads(record_path.read_text())
    record["transforms"][0]["config"]["cuda_graph"] = True
    record_path.write_text(json.dumps(record))
    reloaded = accel.load(tmp_path / "fast")
    assert isinstance(reloaded.hooks["cuda_graph"], CudaGraphHook)
    inputs = reloaded.example_inputs(2)
    assert torch.equal(reloaded(*inputs), model(*inputs))  # off a GPU the hook passes calls through
    reloaded.hooks["cuda_graph"].graphs["captured"] = object()
    assert copy.deepcopy(reloaded).hooks["cuda_graph"].graphs == {}


def test_cuda_graph_on_a_cpu_model_is_refused():
    with pytest.raises(
        accel.AccelError, match="OptimizeConfig.cuda_graph needs the model on a CUDA device"
    ):
        accel.optimize_(accel.load(make_tiny_unet(), "cpu"), accel.OptimizeConfig(cuda_graph=True))


def test_optimize_cli_writes_artifact_and_report(tmp_path, tiny_unet_dir, capsys):
    out = tmp_path / "fast"
    code, stdout, _ = run(
        capsys,
        "optimize",
        "--model",
        str(tiny_unet_dir),
        "--n",
        "8",
        "--steps",
        "3",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0
    report = json.loads(stdout)
    assert report["command"] == "optimize" and report["parity"]["met"]
    assert report["swaps"]["resnet_blocks"] > 0
    if DEVICE == "cpu":
        assert report["kernels"]["group_norm"]["triton"] == 0
        assert any("Triton kernels were not used" in note for note in report["notes"])
    assert (out / "report.md").read_text().count("Output check") == 1
    assert json.loads((out / "accel.json").read_text())["transforms"][0]["name"] == "optimize"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--cuda-graph", "--device", "cpu"], "--cuda-graph needs the model on a CUDA device"),
        (["--dtype", "fp8"], "invalid choice"),
    ],
)
def test_optimize_cli_bad_input(tmp_path, capsys, argv, message):
    out = tmp_path / "fast"
    code, _, err = run(capsys, "optimize", "--n", "4", "--steps", "2", "--out", str(out), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_cuda_graph_replay_matches_eager():
    original, optimized = _pair(make_text_unet())
    accel.optimize_(optimized, accel.OptimizeConfig(dtype="fp16", cuda_graph=True))
    eager = accel.load(make_text_unet(), "cuda")
    accel.optimize_(eager, accel.OptimizeConfig(dtype="fp16"))
    for t in (999, 20):
        x, steps, cond = eager.example_inputs(2, t=t)
        torch.testing.assert_close(
            optimized(x, steps, cond), eager(x, steps, cond), atol=1e-3, rtol=1e-3
        )
    assert len(optimized.hooks["cuda_graph"].graphs) == 1
    # a replay would hide the network's ops from the counter: it runs eagerly
    macs = count_macs(optimized)
    assert macs == count_macs(eager) > 0
