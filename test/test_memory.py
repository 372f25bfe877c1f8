"""Training memory: activation checkpointing, half-precision frozen weights, the saved-tensor
accounting and the planner behind `taseg train RECIPE --plan` (tiny config, seconds)."""
from __future__ import annotations

import warnings

import pytest
import torch

from taseg_ros.classes import ClassInfo, default_palette
from taseg_ros.model.config import get_config
from taseg_ros.model.taseg import build_model
from taseg_ros.train.memory import (
    GiB,
    cast_frozen,
    count_forward,
    parse_memory,
    plan_memory,
    shape_only_model,
    training_loss,
)

CLASSES = ClassInfo(names=tuple(f"class{i}" for i in range(9)), palette=default_palette(9))
HW = (96, 128)


def tiny(**overrides):
    cfg = get_config("tiny", **overrides)
    text = torch.nn.functional.normalize(torch.randn(9, cfg.text_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(cfg, CLASSES, text, seed=0).train()


def batch(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *HW, generator=g) * 255, torch.rand(n, 1, *HW, generator=g), torch.randint(0, 9, (n, *HW), generator=g)


def perturb_trainables(model):
    """Zero-initialised parts (DFFM out, LoRA B) would make many gradients trivially zero."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def gradients(model, rgb, thermal, labels, autocast_dtype=None):
    from taseg_ros.train.memory import autocast_on

    model.zero_grad(set_to_none=True)
    with autocast_on("cpu", autocast_dtype):
        rgb_in, thermal_in, geometry = model.preprocess(rgb, thermal)
        logits = model.postprocess(model(rgb_in, thermal_in), geometry)
    training_loss(logits, labels).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dffm", [True, False])
def test_checkpointing_gives_the_same_gradients(dffm):
    model = tiny(dffm=dffm)
    perturb_trainables(model)
    rgb, thermal, labels = batch()
    plain_logits, plain = gradients(model, rgb, thermal, labels)
    model.image_encoder.grad_checkpointing = True
    ckpt_logits, ckpt = gradients(model, rgb, thermal, labels)
    torch.testing.assert_close(ckpt_logits, plain_logits, rtol=0, atol=0)
    assert plain.keys() == ckpt.keys()
    encoder_grads = [n for n in plain if n.startswith("image_encoder.") and plain[n].abs().max() > 0]
    assert len([n for n in encoder_grads if ".lora_" in n]) == 4 * model.cfg.encoder.depth  # every checkpointed block trains
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_shape_only_count_equals_a_real_run():
    """The planner counts on FakeTensors; the same forward on real tensors saves the same bytes."""
    for autocast_dtype in (None, torch.bfloat16):
        for checkpointing in (False, True):
            fake, mode = shape_only_model(get_config("tiny"), 9, "cpu", autocast_dtype or torch.float32)
            fake.image_encoder.grad_checkpointing = checkpointing
            with mode:
                predicted = count_forward(fake, 2, HW, torch.device("cpu"), autocast_dtype)
            real = tiny()
            cast_frozen(real, autocast_dtype or torch.float32)
            real.image_encoder.grad_checkpointing = checkpointing
            measured = count_forward(real, 2, HW, torch.device("cpu"), autocast_dtype)
            if autocast_dtype is None:
                assert predicted == measured
            else:  # a few hundred bytes of scalars differ between fake and real kernels
                assert abs(predicted.saved_bytes - measured.saved_bytes) < 1e-3 * measured.saved_bytes
            assert measured.largest_block_bytes == predicted.largest_block_bytes


def test_half_frozen_weights_change_nothing_under_autocast():
    """Linear/conv weights stored in bf16 give the logits and gradients autocast gives with
    fp32 storage (autocast casts them to bf16 at each call anyway)."""
    model = tiny()
    perturb_trainables(model)
    rgb, thermal, labels = batch(1)
    ref_logits, ref = gradients(model, rgb, thermal, labels, torch.bfloat16)
    fp32_logits, _ = gradients(model, rgb, thermal, labels, None)
    frozen_before = sum(p.numel() * 4 for p in model.parameters() if not p.requires_grad)
    frozen_matmul = sum(
        p.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))
        for p in m.parameters(recurse=False) if not p.requires_grad
    )
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert cast_frozen(model, torch.bfloat16) == frozen_before - 2 * frozen_matmul + buffers
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    half_logits, half = gradients(model, rgb, thermal, labels, torch.bfloat16)
    autocast_rounding = (ref_logits - fp32_logits).abs().max()
    assert autocast_rounding > 0  # autocast does round: the comparison below means something
    torch.testing.assert_close(half_logits, ref_logits, rtol=0, atol=float(autocast_rounding) * 1e-3)
    for name in ref:
        torch.testing.assert_close(half[name], ref[name], rtol=1e-3, atol=1e-6, msg=name)


def test_plan_rows_grow_with_the_micro_batch_and_pick_the_largest_fit():
    plan = plan_memory(get_config("tiny"), 9, HW, micro_batches=(1, 2, 4, 8, 16))
    totals = [r.total for r in plan.rows]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    step = plan.rows[1].activations - plan.rows[0].activations
    assert step == plan.activation_bytes_per_image > 0
    assert plan.largest_fitting == 16  # 24 GiB by default
    memory = int(plan.rows[2].total / 0.875) + 1  # micro-batch 4 just fits, 8 does not
    assert plan_memory(get_config("tiny"), 9, HW, gpu_memory=memory, micro_batches=(1, 2, 4, 8, 16)).largest_fitting == 4
    text = plan.table()
    assert "largest micro-batch that fits" in text and "predicted peak" in text
    ckpt = plan_memory(get_config("tiny"), 9, HW, grad_checkpointing=True, micro_batches=(1,))
    assert ckpt.activation_bytes_per_image < plan.activation_bytes_per_image


def test_parse_memory():
    assert parse_memory("24GiB") == 24 * GiB
    assert parse_memory("24G") == parse_memory("24 GB") == 24 * GiB
    assert parse_memory("512MiB") == 512 * 1024**2
    assert parse_memory("1000B") == 1000 and parse_memory("1.5") == int(1.5 * GiB)
    with pytest.raises(ValueError, match="--gpu-memory 'lots'"):
        parse_memory("lots")


@pytest.mark.slow
def test_shipped_vit_h_recipes_fit_a_24_gib_gpu_with_margin():
    """The issue's goal: every shipped ViT-H recipe, as shipped, predicted <= 21 GiB on 24 GiB."""
    from taseg_ros.train.memory import plan_for_recipe, recipe_model_config, recipe_num_classes
    from taseg_ros.train.recipe import load_recipe

    for name in ("mfnet", "kp", "fmb", "pst900"):
        recipe = load_recipe(name)
        assert recipe.model == "vit_h"
        micro = recipe.train.micro_batch_size
        plan = plan_for_recipe(recipe, recipe_model_config(recipe), recipe_num_classes(recipe)[0], "cuda",
                               micro_batches=(micro,), gpu_memory=24 * GiB)
        assert plan.rows[0].fits and plan.rows[0].total <= 21 * GiB, (name, plan.table())


def test_gpu_check_writes_its_rows(tmp_path, capsys):
    """The training line of scripts/gpu_check.sh, run on the CPU (no peak there): one row per
    recipe with the plan's prediction and the timed steps, as JSON and Markdown."""
    import json

    from taseg_ros.train.gpu_check import main

    assert main(["--device", "cpu", "--recipes", "demo_tiny", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "train_memory.json").read_text())["rows"]
    assert [r["recipe"] for r in rows] == ["demo_tiny"]
    assert rows[0]["micro_batch"] == 8 and rows[0]["predicted_peak_gib"] > 0 and rows[0]["images_per_s"] > 0
    assert "| demo_tiny | tiny | 96x128 | 8 | off |" in (tmp_path / "train_memory.md").read_text()
