"""The TASeg network on real segment_anything / peft / open_clip classes, tiny configs."""
from __future__ import annotations

import warnings

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT

from taseg_ros.classes import load_classes
from taseg_ros.model.config import get_config
from taseg_ros.model.inputs import normalize_and_pad, plan_geometry, restore_logits
from taseg_ros.model.lora import LoRAQKV
from taseg_ros.model.taseg import PARAMETER_GROUPS, build_model, parameter_breakdown, parameter_group

MFNET = load_classes("mfnet")


def tiny(**overrides):
    cfg = get_config("tiny", **overrides)
    text = torch.nn.functional.normalize(torch.randn(MFNET.num_classes, cfg.text_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(cfg, MFNET, text, seed=0)


def random_inputs(cfg, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    geometry = plan_geometry(h, w, cfg)
    rgb = torch.rand(1, 3, h, w, generator=g) * 255
    thermal = torch.rand(1, 1, h, w, generator=g)
    return (*normalize_and_pad(rgb, thermal, cfg, geometry), geometry)


def plain_sam_encoder(model) -> ImageEncoderViT:
    """A fresh, unmodified segment_anything encoder holding the model's frozen weights."""
    enc = get_config("tiny").encoder
    from functools import partial

    sam = ImageEncoderViT(
        depth=enc.depth, embed_dim=enc.embed_dim, img_size=enc.img_size, mlp_ratio=enc.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=enc.num_heads, patch_size=enc.patch_size,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=enc.global_attn_indexes,
        window_size=enc.window_size, out_chans=enc.out_chans,
    )
    state = {k.replace(".qkv.qkv.", ".qkv."): v for k, v in model.image_encoder.vit.state_dict().items() if ".lora_" not in k}
    sam.load_state_dict(state, strict=True)
    return sam.eval()


@pytest.mark.parametrize("dffm", [True, False])
def test_encoder_equals_segment_anything_at_initialisation(dffm):
    model = tiny(dffm=dffm).eval()
    sam = plain_sam_encoder(model)
    cfg = model.cfg.replace(resolution="sam1024")
    rgb, thermal, _ = random_inputs(cfg, 480, 640)
    with torch.no_grad():
        expected = sam(rgb)
        ours = model.image_encoder(rgb, thermal)
        ours_no_thermal = model.image_encoder(rgb, torch.zeros_like(thermal))
    assert torch.equal(ours, ours_no_thermal), "thermal must not matter before training"
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert expected.abs().mean() > 0.1  # a real, non-trivial output was compared


def test_thermal_changes_encoder_once_fusion_is_trained():
    model = tiny().eval()
    with torch.no_grad():
        for dffm in model.image_encoder.dffm:
            dffm.conv_out.weight.normal_(0, 0.05)
    rgb, thermal, _ = random_inputs(model.cfg, 224, 224)
    with torch.no_grad():
        a = model.image_encoder(rgb, thermal)
        b = model.image_encoder(rgb, torch.zeros_like(thermal))
    assert (a - b).abs().max() > 1e-3


def test_lora_changes_only_q_and_v_slices():
    qkv = torch.nn.Linear(16, 48)
    lora = LoRAQKV(qkv, rank=2, alpha=2.0)
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        base = qkv(x)
        assert torch.equal(lora(x), base)  # B = 0: exact identity
        lora.lora_b_q.weight.normal_()
        lora.lora_b_v.weight.normal_()
        out = lora(x)
    q, k, v = (out - base).split(16, dim=-1)
    assert q.abs().mean() > 1e-3
    assert torch.equal(k, torch.zeros_like(k))
    assert v.abs().mean() > 1e-3


def test_frozen_weights_get_no_gradient_and_stay_bit_identical():
    model = tiny().train()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.01)
    rgb, thermal, _ = random_inputs(model.cfg, 160, 192)
    labels = torch.randint(0, MFNET.num_classes, (1, 160, 192))

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(rgb, thermal), labels)
        loss.backward()
        return loss

    step()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    optimizer.step()
    # After one step LoRA B and the last DFFM conv are non-zero, so gradient reaches every
    # trainable group (at exactly zero init, A matrices and inner DFFM convs get none).
    step()
    grad_by_group = {g: 0.0 for g in PARAMETER_GROUPS}
    for name, p in model.named_parameters():
        if p.requires_grad:
            grad_by_group[parameter_group(name)] += float(p.grad.abs().sum())
    assert all(v > 0 for v in grad_by_group.values() if v is not None), grad_by_group
    assert grad_by_group["head"] > 0 and grad_by_group["encoder_lora"] > 0 and grad_by_group["dffm"] > 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[name]), f"frozen weight {name} changed"


def test_every_trainable_parameter_is_in_a_group_and_groups_are_nonempty():
    counts = parameter_breakdown(tiny())
    for group in PARAMETER_GROUPS:
        assert counts[group] > 0, group
    model = tiny()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == counts["total_trainable"]


@pytest.mark.parametrize("resolution", ["native", "sam1024"])
@pytest.mark.parametrize("hw", [(480, 640), (720, 1280), (640, 512), (250, 333)])
def test_any_frame_size_gives_logits_at_input_resolution(resolution, hw):
    model = tiny(resolution=resolution).eval()
    rgb, thermal, geometry = random_inputs(model.cfg, *hw)
    if resolution == "sam1024":
        assert rgb.shape[-2:] == (1024, 1024)
    else:
        assert rgb.shape[-2] % 16 == 0 and rgb.shape[-1] % 16 == 0
        assert rgb.shape[-2] - hw[0] < 16 and rgb.shape[-1] - hw[1] < 16
    with torch.no_grad():
        logits = restore_logits(model(rgb, thermal), geometry)
    assert logits.shape == (1, MFNET.num_classes, *hw)
    assert torch.isfinite(logits).all()


def test_native_mode_uses_fewer_tokens_for_camera_frames():
    assert plan_geometry(480, 640, get_config("tiny")).padded_hw == (480, 640)
    assert plan_geometry(480, 640, get_config("tiny", resolution="sam1024")).padded_hw == (1024, 1024)
    assert plan_geometry(480, 640, get_config("tiny", resolution="sam1024")).resized_hw == (768, 1024)


def test_input_must_be_padded():
    model = tiny()
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.zeros(1, 3, 100, 100), torch.zeros(1, 1, 100, 100))


def breakdown(name, **overrides):
    cfg = get_config(name, **overrides)
    return parameter_breakdown(build_model(cfg, MFNET, torch.empty(9, cfg.text_dim, device="meta"), device="meta"))


def test_vit_h_trainable_count_is_near_the_paper():
    counts = breakdown("vit_h")
    assert abs(counts["total_trainable"] - 28.77e6) / 28.77e6 < 0.01
    assert counts["frozen"] == 641_090_608  # segment_anything's ViT-H encoder + prompt encoder + decoder


def test_ablation_switches_change_the_breakdown_as_expected():
    full = breakdown("vit_b")
    no_dffm = breakdown("vit_b", dffm=False)
    no_decoder_lora = breakdown("vit_b", decoder_lora=False)
    no_text = breakdown("vit_b", text=False)
    dim = 768
    assert no_dffm["dffm"] == 2 * dim * dim + dim  # one concat projection instead of 12 DFFMs
    assert no_dffm["total_trainable"] < full["total_trainable"]
    assert no_decoder_lora["decoder_lora"] == 0
    assert no_decoder_lora["total_trainable"] == full["total_trainable"] - full["decoder_lora"]
    assert no_text["text_attention"] == 0
    assert no_text["head"] == 9 * 256  # K class tokens
    for counts in (no_dffm, no_decoder_lora, no_text):
        assert counts["frozen"] == full["frozen"]
        assert counts["encoder_lora"] == full["encoder_lora"] == 12 * 4 * 4 * dim


def test_text_off_model_runs_and_learns_class_tokens():
    model = tiny(text=False).train()
    rgb, thermal, _ = random_inputs(model.cfg, 128, 128)
    logits = model(rgb, thermal)
    assert logits.shape == (1, 9, 128, 128)
    logits.mean().backward()
    assert model.mask_decoder.class_tokens.grad.abs().sum() > 0


def test_text_embeddings_shape_is_checked():
    cfg = get_config("tiny")
    with pytest.raises(ValueError, match=r"expected \(9, 512\)"):
        build_model(cfg, MFNET, torch.zeros(5, 512))
