"""Checkpoints: round trips, official SAM loading, text embedding sources, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from taseg_ros.classes import load_classes
from taseg_ros.model.checkpoint import describe_checkpoint, init_checkpoint, load_checkpoint, save_checkpoint
from taseg_ros.model.config import get_config
from taseg_ros.model.inputs import normalize_and_pad, plan_geometry
from taseg_ros.model.sam_parts import SamParts, load_sam_weights
from taseg_ros.weights import sha256_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def official_sam_file(path, cfg_name="tiny", seed=3):
    """A SAM checkpoint in the official format: torch.save of Sam's state dict (our three
    parts plus pixel_mean/pixel_std), random weights of the config's shape."""
    torch.manual_seed(seed)
    parts = SamParts(get_config(cfg_name))
    state = dict(parts.state_dict())
    state["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    torch.save(state, path)
    return path


def logits_of(model, seed=0, hw=(96, 128)):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, 3, *hw, generator=g) * 255
    thermal = torch.rand(1, 1, *hw, generator=g)
    inputs = normalize_and_pad(rgb, thermal, model.cfg, plan_geometry(*hw, model.cfg))
    with torch.no_grad():
        return model.eval()(*inputs)


def perturb_trainables(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_round_trip_with_embedded_random_frozen_weights(tmp_path, tiny_checkpoint):
    model = load_checkpoint(tiny_checkpoint)
    perturb_trainables(model)  # a "trained" model: every tensor matters
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    again = load_checkpoint(path)
    assert torch.equal(logits_of(model), logits_of(again))
    cfg, classes, metadata = describe_checkpoint(path)
    assert metadata["frozen"] == "embedded" and cfg.name == "tiny" and classes.names == load_classes("mfnet").names


def test_round_trip_against_an_official_format_sam_file(tmp_path):
    sam = official_sam_file(tmp_path / "sam_tiny.pth")
    model = init_checkpoint("tiny", "pst900", tmp_path / "init.safetensors", sam_checkpoint=sam)
    assert model.frozen_source.kind == "sam_checkpoint" and model.frozen_source.sha256 == sha256_file(sam)
    perturb_trainables(model)
    path = save_checkpoint(model, tmp_path / "trained.safetensors")
    _, _, metadata = describe_checkpoint(path)
    assert metadata["frozen"] == "sam_checkpoint"
    # Only the trainable tensors and text embeddings are stored: a fraction of the model.
    assert path.stat().st_size < 0.3 * sam.stat().st_size
    again = load_checkpoint(path, sam_checkpoint=sam)
    assert torch.equal(logits_of(model), logits_of(again))
    # The frozen weights really came from the SAM file.
    reference = torch.load(sam, weights_only=True)
    assert torch.equal(again.image_encoder.vit.patch_embed.proj.weight, reference["image_encoder.patch_embed.proj.weight"])


def test_sam_file_found_in_models_dir_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TASEG_MODELS_DIR", str(tmp_path))
    sam = official_sam_file(tmp_path / "sam_tiny.pth")
    model = init_checkpoint("tiny", "mfnet", tmp_path / "m.safetensors", sam_checkpoint=sam)
    save_checkpoint(model, tmp_path / "m.safetensors")
    assert load_checkpoint(tmp_path / "m.safetensors").frozen_source.name == "sam_tiny.pth"
    sam.unlink()
    with pytest.raises(FileNotFoundError, match="sam_tiny.pth"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_wrong_sam_file_is_refused_by_checksum(tmp_path):
    sam = official_sam_file(tmp_path / "sam_tiny.pth", seed=3)
    init_checkpoint("tiny", "mfnet", tmp_path / "m.safetensors", sam_checkpoint=sam)
    other = official_sam_file(tmp_path / "other.pth", seed=4)
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path / "m.safetensors", sam_checkpoint=other)


def test_sam_file_of_another_size_names_the_mismatching_keys(tmp_path):
    bigger = tmp_path / "sam_vit_wrong.pth"
    torch.manual_seed(0)
    parts = SamParts(get_config("tiny", encoder={"embed_dim": 96, "num_heads": 2}))
    torch.save(parts.state_dict(), bigger)
    with torch.device("meta"):
        target = SamParts(get_config("tiny"))
    with pytest.raises(ValueError) as err:
        load_sam_weights(target, bigger)
    message = str(err.value)
    assert str(bigger) in message and "shape mismatches" in message
    assert "image_encoder.blocks.0.mlp.lin1.weight: file (384, 96) vs model (256, 64)" in message


def test_corrupt_and_foreign_files_fail_clearly(tmp_path, tiny_checkpoint):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(ValueError, match="garbage.safetensors.*not a TASeg checkpoint"):
        load_checkpoint(garbage)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="foreign.safetensors.*format 'something-else'"):
        load_checkpoint(foreign)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        load_checkpoint(truncated)

    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_checkpoint(tmp_path / "missing.safetensors")

    bad_sam = tmp_path / "sam_bad.pth"
    bad_sam.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(ValueError, match="sam_bad.pth.*cannot read"):
        init_checkpoint("tiny", "mfnet", tmp_path / "x.safetensors", sam_checkpoint=bad_sam)


def test_tensors_that_do_not_fit_the_metadata_are_named(tmp_path, tiny_checkpoint):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(tiny_checkpoint), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(tiny_checkpoint))
    key = next(k for k in tensors if "dffm.0.conv_out.weight" in k)
    tensors[key] = torch.zeros(3, 3)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    with pytest.raises(ValueError, match=r"bad.safetensors.*\n.*shape mismatches: image_encoder.dffm.0.conv_out.weight"):
        load_checkpoint(bad)

    metadata = dict(metadata)
    classes = json.loads(metadata["classes"])
    classes["classes"] = classes["classes"][:5]
    classes["palette"] = classes["palette"][:5]
    classes["prompts"] = classes["prompts"][:5]
    metadata["classes"] = json.dumps(classes)
    fewer = tmp_path / "fewer.safetensors"
    save_file(load_file(str(tiny_checkpoint)), str(fewer), metadata=metadata)
    with pytest.raises(ValueError, match=r"expected \(5, 512\)"):
        load_checkpoint(fewer)


def test_checkpoint_write_is_atomic(tmp_path, tiny_checkpoint, monkeypatch):
    model = load_checkpoint(tiny_checkpoint)
    target = tmp_path / "keep.safetensors"
    save_checkpoint(model, target)
    before = target.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("taseg_ros.outputs.os.replace", crash)  # the one write mechanism's rename
    perturb_trainables(model)
    with pytest.raises(OSError):
        save_checkpoint(model, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]  # no temporary left behind


def test_precomputed_real_clip_embeddings(tmp_path, samples_dir):
    """Real CLIP ViT-B/16 embeddings of the 19 Cityscapes classes = the KP class list."""
    path = samples_dir / "clip_text" / "cityscapes_clip_vitb16_prompt_ensemble.npy"
    names = (samples_dir / "clip_text" / "cityscapes_classes.txt").read_text().splitlines()
    assert [n.replace(" ", "_") for n in names] == list(load_classes("kp").names)
    model = init_checkpoint("tiny", "kp", tmp_path / "kp.safetensors", text_embeddings=path)
    stored = model.mask_decoder.text_embeddings
    expected = torch.nn.functional.normalize(torch.from_numpy(np.load(path)).float(), dim=-1)
    assert torch.allclose(stored, expected, atol=1e-6)
    # Real CLIP geometry survives: "car" is closer to "truck" than to "sky".
    kp = load_classes("kp").names
    sim = stored @ stored.T
    car, truck, sky = kp.index("car"), kp.index("truck"), kp.index("sky")
    assert sim[car, truck] > sim[car, sky]
    assert load_checkpoint(tmp_path / "kp.safetensors").mask_decoder.text_embeddings.shape == (19, 512)


def test_precomputed_embeddings_wrong_shape_is_refused(tmp_path, samples_dir):
    coco = samples_dir / "clip_text" / "coco_clip_vitb32_a+cname.npy"  # 80 classes
    with pytest.raises(ValueError, match=r"coco_clip_vitb32_a\+cname.npy.*\(80, 512\).*expected \(9, 512\)"):
        init_checkpoint("tiny", "mfnet", tmp_path / "x.safetensors", text_embeddings=coco)


def test_pt_embeddings_and_local_open_clip_weights(tmp_path):
    import open_clip

    from taseg_ros.model.text import class_text_embeddings, encode_with_open_clip

    # A .pt file of K x D embeddings.
    emb = torch.randn(9, 512)
    torch.save(emb, tmp_path / "emb.pt")
    model = init_checkpoint("tiny", "mfnet", tmp_path / "a.safetensors", text_embeddings=tmp_path / "emb.pt")
    assert torch.allclose(model.mask_decoder.text_embeddings, torch.nn.functional.normalize(emb, dim=-1))

    # open_clip weights from a local file: a tiny CLIP saved as open_clip saves state dicts.
    encode_with_open_clip(["x"], "taseg-tiny-text", None)  # registers the tiny config
    torch.manual_seed(7)
    clip = open_clip.create_model("taseg-tiny-text")
    weights = tmp_path / "tiny_clip.bin"
    torch.save(clip.state_dict(), weights)
    prompts = list(load_classes("mfnet").prompts)
    got, source = class_text_embeddings(prompts, model_name="taseg-tiny-text", dim=512, template="a photo of a {}.", weights=weights)
    tokens = open_clip.get_tokenizer("taseg-tiny-text")([f"a photo of a {p}." for p in prompts])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(clip.eval().encode_text(tokens), dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert source == "open_clip:taseg-tiny-text:tiny_clip.bin"
    # Different prompt template -> different embeddings.
    other, _ = class_text_embeddings(prompts, model_name="taseg-tiny-text", dim=512, template="{}", weights=weights)
    assert not torch.allclose(got, other)
    with pytest.raises(ValueError, match="placeholder"):
        class_text_embeddings(prompts, model_name="taseg-tiny-text", dim=512, template="no slot", weights=weights)


def test_openai_torchscript_release_format(tmp_path):
    """OpenAI's ViT-L-14.pt is a TorchScript archive with fp16 weights; a tiny one of the
    same format gives the embeddings of the model it was made from."""
    import open_clip
    from open_clip.model import convert_weights_to_fp16

    from taseg_ros.model.text import encode_with_open_clip, is_torchscript_archive

    encode_with_open_clip(["x"], "taseg-tiny-text", None)  # registers the tiny config
    torch.manual_seed(11)
    clip = open_clip.create_model("taseg-tiny-text").eval()
    convert_weights_to_fp16(clip)  # as OpenAI ships them
    path = tmp_path / "tiny-openai.pt"
    torch.jit.save(torch.jit.script(clip), str(path))
    assert is_torchscript_archive(path)
    clip = clip.float()
    got = encode_with_open_clip(["a photo of a car.", "a photo of a person."], "taseg-tiny-text", path)
    tokens = open_clip.get_tokenizer("taseg-tiny-text")(["a photo of a car.", "a photo of a person."])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(clip.encode_text(tokens), dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)


# --- export: one self-contained file for deployment -------------------------------------------------


@pytest.fixture
def trained_with_sam_file(tmp_path):
    """A 'trained' checkpoint that refers to an official-format SAM file (frozen=sam_checkpoint)."""
    sam = official_sam_file(tmp_path / "sam_tiny.pth")
    model = init_checkpoint("tiny", "mfnet", tmp_path / "init.safetensors", sam_checkpoint=sam)
    perturb_trainables(model)
    return model, save_checkpoint(model, tmp_path / "trained.safetensors"), sam


def test_export_needs_no_sam_file_and_is_bit_identical(tmp_path, trained_with_sam_file, capsys):
    from taseg_ros.cli import main
    from taseg_ros.inference import Segmenter

    model, trained, sam = trained_with_sam_file
    exported = tmp_path / "deploy" / "model.safetensors"
    assert main(["export", str(trained), "--sam-checkpoint", str(sam), "-o", str(exported)]) == 0
    assert "bit-identical" in capsys.readouterr().out
    sam.unlink()  # the robot has no SAM file
    with pytest.raises(FileNotFoundError, match="sam_tiny.pth"):
        load_checkpoint(trained)
    again = load_checkpoint(exported)
    assert torch.equal(logits_of(model), logits_of(again))
    _, _, metadata = describe_checkpoint(exported)
    assert metadata["frozen"] == "embedded" and metadata["frozen_storage"] == "fp32"
    assert json.loads(metadata["frozen_source"])["sha256"] == model.frozen_source.sha256  # provenance kept
    assert json.loads(metadata["exported_from"]) == {"name": "trained.safetensors", "sha256": sha256_file(trained)}
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    assert Segmenter.from_checkpoint(exported).predict(rgb, rgb[:, :, 0]).labels.shape == (60, 80)


def test_export_with_half_precision_frozen_weights(tmp_path, trained_with_sam_file):
    from taseg_ros.model.checkpoint import export_checkpoint

    model, trained, sam = trained_with_sam_file
    full = export_checkpoint(trained, tmp_path / "fp32.safetensors", sam_checkpoint=sam)
    half = export_checkpoint(trained, tmp_path / "fp16.safetensors", sam_checkpoint=sam, frozen_storage="fp16")
    assert full["max_abs_change"] == 0.0 and 0.0 < half["max_abs_change"] < 1e-2
    trainable_bytes = sum(v.numel() * 4 for v in model.trainable_state_dict().values())
    frozen_bytes = full["bytes"] - trainable_bytes
    assert half["bytes"] == pytest.approx(trainable_bytes + frozen_bytes / 2, rel=0.05)
    again = load_checkpoint(half["output"])
    assert all(p.dtype == torch.float32 for p in again.parameters())
    for name, tensor in model.trainable_state_dict().items():  # trained tensors are never rounded
        assert torch.equal(again.state_dict()[name], tensor), name
    reference, rounded = logits_of(model), logits_of(again)
    assert (reference.argmax(1) == rounded.argmax(1)).float().mean() > 0.99
    with pytest.raises(ValueError, match="must not overwrite its source"):
        export_checkpoint(trained, trained, sam_checkpoint=sam)
