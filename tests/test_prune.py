import copy
import json

import pytest
import torch
import torch.nn as nn
from diffusers import DDPMScheduler

import accel
from accel.core.denoiser import Denoiser
from accel.core.errors import AccelError, ConfigError
from accel.metrics.size import count_macs, count_params
from accel.prune import PruneConfig, prune_
from accel.prune.importance import accumulate_gradients, channel_scores
from accel.prune.structure import build_graph, channel_groups, channels_to_remove, kept_channels
from conftest import make_tiny_dit, make_tiny_pixart, make_tiny_text_unet, make_tiny_unet

MAKERS = {
    "unet": make_tiny_unet,
    "unet-text": make_tiny_text_unet,
    "dit": make_tiny_dit,
    "dit-text": make_tiny_pixart,
}
QUICK = dict(importance_batch=4, timestep_stride=10)


def tiny(kind: str) -> Denoiser:
    return Denoiser(
        MAKERS[kind](), dict(DDPMScheduler(num_train_timesteps=100).config), source=f"tiny-{kind}"
    )


def images_for(denoiser: Denoiser, count: int = 8) -> torch.Tensor:
    return (
        torch.rand(count, *denoiser.sample_shape, generator=torch.Generator().manual_seed(1)) * 2
        - 1
    )


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("criterion", ["magnitude", "diff-pruning"])
def test_each_supported_class_prunes_to_a_smaller_network_that_runs(kind, criterion):
    model = tiny(kind)
    before = {n: p.shape for n, p in model.module.named_parameters()}
    x, t, cond = model.example_inputs(2)
    record = prune_(
        model, PruneConfig(ratio=0.5, criterion=criterion, round_to=4, **QUICK), images_for(model)
    )
    with torch.no_grad():
        out = model(x, t, cond)
    assert out.shape == x.shape and torch.isfinite(out).all()
    after = dict(model.module.named_parameters())
    assert sum(p.numel() for p in after.values()) < 0.75 * sum(s.numel() for s in before.values())
    assert record["widths"] and model.transforms[-1]["name"] == "prune"
    for name, m in model.module.named_modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.weight.shape == (m.num_channels,), name
        # whole heads: head width as trained, q/k/v/out agree
        if hasattr(m, "to_q") and hasattr(m, "heads"):
            head_dim = before[f"{name}.to_q.weight"][0] // MAKERS[kind]().get_submodule(name).heads
            assert (
                m.to_q.out_features
                == m.to_k.out_features
                == m.to_v.out_features
                == m.heads * head_dim
            )
            assert m.to_out[0].in_features == m.heads * head_dim
            assert (
                m.to_k.in_features == before[f"{name}.to_k.weight"][1]
                or m.to_k.in_features == m.to_q.in_features
            )
    first_conv = next(n for n in before if n.endswith("weight") and len(before[n]) == 4)
    assert after[first_conv].shape[1] == before[first_conv][1]  # the input keeps its channels


def test_cross_attention_keeps_the_text_width_and_the_output_layer_its_channels():
    model = tiny("unet-text")
    prune_(model, PruneConfig(ratio=0.5, criterion="magnitude", round_to=4))
    cross = [m for n, m in model.module.named_modules() if n.endswith("attn2")]
    assert cross and all(m.to_k.in_features == m.to_v.in_features == 16 for m in cross)
    assert model.module.conv_out.out_channels == 4


def test_pixart_loses_heads_and_feed_forward_width_and_keeps_its_residual_and_text_widths():
    model = tiny("dit-text")
    before = {n: p.shape for n, p in model.module.named_parameters()}
    prune_(model, PruneConfig(ratio=0.5, criterion="magnitude", round_to=4))
    after = {n: p.shape for n, p in model.module.named_parameters()}
    # adaLN-single's tables and the projected text states are the residual width (not pruned yet)
    for name in ("scale_shift_table", "transformer_blocks.1.scale_shift_table"):
        assert after[name] == before[name]
    for name in ("caption_projection.linear_2.weight", "pos_embed.proj.weight"):
        assert after[name][0] == before[name][0]
    block = model.module.transformer_blocks[0]
    assert block.attn1.heads == block.attn2.heads == 1
    assert (
        after["transformer_blocks.0.ff.net.0.proj.weight"][0]
        < before["transformer_blocks.0.ff.net.0.proj.weight"][0]
    )


def test_round_to_and_groupnorm_constraints_pick_the_kept_width():
    model = accel.load("digits")
    groups = channel_groups(build_graph(model), model)
    widths = {g.name: (g.channels, kept_channels(g, 0.3, 8)) for g in groups}
    assert widths["down_blocks.0.resnets.0.conv1"] == (24, 16)
    assert widths["up_blocks.0.resnets.0.conv1"] == (96, 64)
    assert all(keep % 8 == 0 for _, keep in widths.values())


def test_a_ratio_that_empties_a_groupnorm_group_is_refused():
    model = tiny("unet")  # GroupNorm(4 groups) over 8 channels: 0.9 would keep 0.8 channels
    with pytest.raises(ConfigError, match="no channel"):
        prune_(model, PruneConfig(ratio=0.9, criterion="magnitude", round_to=1))
    assert not model.transforms


def test_groupnorm_aligned_removal_takes_the_same_positions_from_every_group():
    # 2 groups of 3: position 1 is weakest on average
    scores = torch.tensor([5.0, 0.0, 9.0, 7.0, 1.0, 8.0])
    assert channels_to_remove(scores, 4, aligned_groups=2) == [1, 4]
    assert channels_to_remove(scores, 4, aligned_groups=1) == [1, 4]
    assert channels_to_remove(torch.tensor([3.0, 1.0, 2.0]), 2, aligned_groups=1) == [1]


def test_magnitude_removes_the_channels_that_were_zeroed():
    """A resnet block's inner channels at positions 0 of each GroupNorm group carry nothing: they
    must go."""
    model = tiny("unet")
    block = model.module.down_blocks[0].resnets[0]
    dead = [0, 2, 4, 6]  # GroupNorm(4, 8): position 0 of every group
    with torch.no_grad():
        for p in (
            block.conv1.weight,
            block.conv1.bias,
            block.norm2.weight,
            block.norm2.bias,
            block.time_emb_proj.weight,
            block.time_emb_proj.bias,
        ):
            p[dead] = 0
        block.conv2.weight[:, dead] = 0
    prune_(model, PruneConfig(ratio=0.5, criterion="magnitude", round_to=1))
    assert block.conv1.out_channels == 4
    # none of the dead channels is left
    assert (block.conv1.weight.abs().flatten(1).sum(1) > 0).all()


@pytest.mark.slow
def test_taylor_and_magnitude_rank_channels_differently_on_the_reference_model():
    from accel.data import digits_images

    model = accel.load("digits")
    images, _ = digits_images()
    config = PruneConfig(criterion="taylor", importance_batch=16, timestep_stride=100)
    with torch.enable_grad():
        accumulate_gradients(model, images, config)
    generator = torch.Generator().manual_seed(0)
    groups = [g for g in channel_groups(build_graph(model), model) if g.channels >= 48]
    differing = 0
    for g in groups:
        taylor = channel_scores(g.slices, g.channels, "taylor", generator)
        magnitude = channel_scores(g.slices, g.channels, "magnitude", generator)
        keep = kept_channels(g, 0.3, 8)
        differing += channels_to_remove(taylor, keep, g.aligned_groups) != channels_to_remove(
            magnitude, keep, g.aligned_groups
        )
    assert differing >= len(groups) // 2, (
        f"only {differing} of {len(groups)} groups prune differently"
    )


@pytest.mark.slow
def test_diff_pruning_threshold_stops_the_gradient_accumulation_early():
    from accel.data import digits_images

    model = accel.load("digits")
    images, _ = digits_images()
    runs = {}
    for name, config in {
        "diff-0.05": PruneConfig(threshold=0.05),
        "diff-0.2": PruneConfig(threshold=0.2),
        "diff-0": PruneConfig(threshold=0.0),
        "taylor": PruneConfig(criterion="taylor"),
    }.items():
        from dataclasses import replace

        with torch.enable_grad():
            runs[name] = accumulate_gradients(
                model, images, replace(config, importance_batch=8, timestep_stride=50)
            )
    grid = runs["taylor"]["grid"]
    assert runs["taylor"]["timesteps"] == runs["diff-0"]["timesteps"] == grid == 20
    assert runs["diff-0.2"]["timesteps"] < runs["diff-0.05"]["timesteps"] <= grid
    losses = runs["diff-0.2"]["losses"]
    assert losses[-1] < 0.2 * max(losses) and all(
        x >= 0.2 * max(losses[: i + 1]) for i, x in enumerate(losses[:-1])
    )


@pytest.mark.parametrize("kind", MAKERS)
def test_a_saved_pruned_model_reloads_to_exactly_the_same_outputs(kind, tmp_path):
    model = tiny(kind)
    prune_(model, PruneConfig(ratio=0.5, criterion="random", round_to=4))
    accel.save(model, tmp_path / "pruned")
    record = json.loads((tmp_path / "pruned" / "accel.json").read_text())
    assert [t["name"] for t in record["transforms"]] == ["prune"] and record["transforms"][0][
        "widths"
    ]
    reloaded = accel.load(tmp_path / "pruned")
    x, t, cond = model.example_inputs(3)
    with torch.no_grad():
        assert torch.equal(model(x, t, cond), reloaded(x, t, cond))
    assert not list(tmp_path.glob("pruned/*.pt")) and not list(
        tmp_path.glob("pruned/*.bin")
    )  # nothing pickled


def test_an_artifact_whose_widths_do_not_fit_the_model_is_one_error(tmp_path):
    model = tiny("unet")
    prune_(model, PruneConfig(ratio=0.5, criterion="random", round_to=4))
    accel.save(model, tmp_path / "pruned")
    path = tmp_path / "pruned" / "accel.json"
    record = json.loads(path.read_text())
    record["transforms"][0]["widths"]["conv_in"]["out"] = 99
    path.write_text(json.dumps(record))
    with pytest.raises(AccelError, match="prune record does not describe this model"):
        accel.load(tmp_path / "pruned")


@pytest.mark.slow
def test_prune_comes_first_in_the_chain(tmp_path):
    from conftest import tiny_calib

    model = tiny("unet")
    accel.quantize_(model, accel.QuantConfig(w_bits=8, a_bits=8), tiny_calib(model), progress=False)
    with pytest.raises(AccelError, match="cannot prune this model: it went through quantize"):
        prune_(model, PruneConfig(criterion="magnitude"))


def test_a_dit_loses_the_same_residual_channels_in_every_layer_and_chunk():
    """DiT's residual width is cut by hand (accel.prune.residual): channels zeroed in every layer
    that holds them go, and each writer, reader, adaLN chunk and the positional buffer keep the
    same others, in order."""
    model = tiny("dit")
    module, original = model.module, copy.deepcopy(model.module)
    width, dead = module.pos_embed.proj.out_channels, [1, 5, 6, 12]

    def chunked(chunks: int, channels: list[int]) -> list[int]:
        return [c * width + i for c in range(chunks) for i in channels]

    with torch.no_grad():
        module.proj_out_2.weight[:, dead] = 0
        module.pos_embed.proj.weight[dead], module.pos_embed.proj.bias[dead] = 0, 0
        module.proj_out_1.weight[chunked(2, dead)], module.proj_out_1.bias[chunked(2, dead)] = 0, 0
        for block in module.transformer_blocks:
            for writer in (block.attn1.to_out[0], block.ff.net[2]):
                writer.weight[dead], writer.bias[dead] = 0, 0
            for reader in (block.attn1.to_q, block.attn1.to_k, block.attn1.to_v):
                reader.weight[:, dead] = 0
            block.ff.net[0].proj.weight[:, dead] = 0
            block.norm1.linear.weight[chunked(6, dead)] = 0
            block.norm1.linear.bias[chunked(6, dead)] = 0
    zeroed = copy.deepcopy(module)
    prune_(model, PruneConfig(ratio=0.25, criterion="magnitude", round_to=1))
    kept = [i for i in range(width) if i not in dead]
    assert module.pos_embed.proj.out_channels == len(kept)
    assert torch.equal(module.pos_embed.pos_embed, original.pos_embed.pos_embed[..., kept])
    assert torch.equal(module.proj_out_1.bias, zeroed.proj_out_1.bias[chunked(2, kept)])
    for block, before in zip(module.transformer_blocks, zeroed.transformer_blocks):
        assert torch.equal(block.norm1.linear.bias, before.norm1.linear.bias[chunked(6, kept)])
        assert torch.equal(block.attn1.to_out[0].bias, before.attn1.to_out[0].bias[kept])
        assert torch.equal(block.ff.net[2].bias, before.ff.net[2].bias[kept])
        assert block.norm1.norm.normalized_shape == (len(kept),) == block.norm3.normalized_shape
        assert block.attn1.to_v.in_features == len(kept)
    x, t, cond = model.example_inputs(2)
    with torch.no_grad():
        assert model(x, t, cond).shape == x.shape


@pytest.mark.slow
def test_digits_dit_at_0_3_loses_more_than_40_percent_of_its_macs():
    """Heads, MLP width, the conditioning width and the residual width together (28% without the
    residual width)."""
    model = accel.load("digits-dit")
    before = count_macs(model)
    prune_(model, PruneConfig(ratio=0.3, criterion="magnitude"))
    assert count_macs(model) < 0.6 * before


def test_a_weight_criterion_without_fine_tuning_prunes_a_model_with_no_training_data():
    from conftest import make_tiny_text_unet

    model = accel.load(make_tiny_text_unet())  # not the built-in: no data of its own
    pruned = accel.run_stage(
        "prune", model, ratio=0.5, criterion="magnitude", finetune_steps=0, round_to=1
    ).model
    assert count_params(pruned) < count_params(model)
    # gradients need images: the refusal says which pruning needs none
    with pytest.raises(ConfigError, match="source is needed.*--criterion magnitude"):
        accel.run_stage("prune", model, ratio=0.5, finetune_steps=0)
