import pytest
import torch

from pipeline.nets.classifier import NoisyClassifier
from pipeline.nets.evalnet import EvalNet
from pipeline.nets.flops import count_flops, forward_gflops_per_image
from pipeline.nets.layers import AttentionBlock
from pipeline.nets.unet import UNet, adm_imagenet64_config, validate_unet_config
from tests.diffusion.tiny import randomize_, tiny_unet


@pytest.mark.parametrize("size,mult,attention", [(8, (1, 2), (4,)), (16, (1, 2, 2), (8, 4)),
                                                  (32, (1, 2, 2), (16, 8)), (64, (1, 1, 2, 2), (16, 8))])
def test_unet_builds_and_keeps_shapes_from_8_to_64_px(size, mult, attention):
    net = tiny_unet(size, channel_mult=mult, attention_resolutions=attention)
    x = torch.randn(2, 3, size, size)
    assert net(x, torch.tensor([0, 999]), torch.tensor([1, 4])).shape == (2, 3, size, size)
    sigma = tiny_unet(size, channel_mult=mult, attention_resolutions=attention, learn_sigma=True)
    assert sigma(x, torch.tensor([0, 999]), torch.tensor([1, 4])).shape == (2, 6, size, size)


def test_unet_256px_and_adm_imagenet64_configuration_build():
    with torch.device("meta"):
        adm = UNet(**adm_imagenet64_config())
        big = UNet(256, base_channels=32, num_res_blocks=1, attention_resolutions=(32, 16, 8), num_head_channels=32,
                   num_classes=10, resblock_updown=True)
        out = big(torch.empty(1, 3, 256, 256), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    assert out.shape == (1, 3, 256, 256)
    assert sum(p.numel() for p in adm.parameters()) == pytest.approx(296e6, rel=0.01)  # ADM-64: 296M
    assert adm.out_channels == 6 and adm.null_label == 1000


def test_labels_condition_the_output_and_the_null_token_is_its_own_class():
    net = tiny_unet(8, num_classes=4)
    x, t = torch.randn(1, 3, 8, 8).expand(5, 3, 8, 8), torch.full((5,), 300)
    out = net(x, t, torch.tensor([0, 1, 2, 3, 4]))
    for i in range(5):
        for j in range(i + 1, 5):
            assert float((out[i] - out[j]).abs().max()) > 1e-4, (i, j)
    torch.testing.assert_close(net(x[:1], t[:1], None), out[4:5])  # labels=None means the null token
    assert float((net(x[:1], torch.tensor([301]), torch.tensor([0])) - out[:1]).abs().max()) > 1e-5  # t matters
    with pytest.raises(ValueError, match="unconditional"):
        tiny_unet(8, num_classes=None)(x[:1], t[:1], torch.tensor([0]))


def test_fresh_unet_starts_from_zero_output_layers():
    net = UNet(8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), num_head_channels=8)
    with torch.no_grad():
        assert float(net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).abs().max()) == 0.0  # ADM's zero init


def test_unet_heads_follow_channels_per_head_or_head_count():
    net = UNet(16, base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
               num_head_channels=16)
    heads = [m.num_heads for m in net.modules() if m.__class__.__name__ == "AttentionBlock"]
    assert heads and set(heads) == {4}  # 64 channels at 8 px / 16 per head
    net = UNet(16, base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,), num_heads=2)
    assert {m.num_heads for m in net.modules() if m.__class__.__name__ == "AttentionBlock"} == {2}


@pytest.mark.parametrize("kwargs,message", [
    (dict(image_size=36, channel_mult=(1, 2, 2, 2)), "not divisible by 2\\*\\*"),
    (dict(image_size=32, channel_mult=(1, 2), attention_resolutions=(8,)), "attention resolution 8 px"),
    (dict(image_size=32, channel_mult=(1, 2), num_head_channels=48), "num_head_channels=48"),
    (dict(image_size=32, channel_mult=(1, 2), num_heads=3, num_head_channels=None), "num_heads=3"),
    (dict(image_size=32, channel_mult=()), "channel_mult is empty"),
])
def test_validation_names_the_problem(kwargs, message):
    config = dict(image_size=32, base_channels=32, channel_mult=(1, 2), attention_resolutions=(16,), num_heads=4,
                  num_head_channels=32)
    config.update(kwargs)
    with pytest.raises(ValueError, match=message):
        validate_unet_config(**config)
    with pytest.raises(ValueError, match=message):
        UNet(**config)


def test_noisy_classifier_is_a_timestep_conditioned_encoder_with_attention_pooling():
    classifier = randomize_(NoisyClassifier(16, num_classes=7, base_channels=16, channel_mult=(1, 2, 2),
                                            num_res_blocks=1, attention_resolutions=(8, 4), num_head_channels=8)).eval()
    x = torch.randn(3, 3, 16, 16)
    logits = classifier(x, torch.tensor([0, 500, 999]))
    assert logits.shape == (3, 7)
    other_t = classifier(x, torch.tensor([10, 510, 900]))
    assert float((logits - other_t).abs().max().detach()) > 1e-5
    assert not any(name.startswith("output_blocks") for name, _ in classifier.named_parameters())
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(classifier(x, torch.tensor([1, 2, 3])).log_softmax(-1)[:, 0].sum(), x)
    assert grad.shape == x.shape and float(grad.abs().sum()) > 0


def test_evalnet_returns_penultimate_features_and_logits():
    net = EvalNet(in_channels=1, num_classes=10, width=8, blocks_per_stage=(1, 1)).eval()
    features, logits = net(torch.randn(4, 1, 8, 8))
    assert features.shape == (4, net.feature_dim) == (4, 16) and logits.shape == (4, 10)
    torch.testing.assert_close(net.fc(features), logits)


def test_flop_counter_counts_a_linear_layer_exactly():
    layer = torch.nn.Linear(64, 32, bias=False)
    assert count_flops(lambda: layer(torch.randn(5, 64))) == 2 * 5 * 64 * 32
    net = tiny_unet(8)
    per_image = forward_gflops_per_image(net, torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))
    per_image_4 = forward_gflops_per_image(net, torch.randn(4, 3, 8, 8), torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 2, 3]))
    assert per_image > 0 and per_image == pytest.approx(per_image_4, rel=1e-6)


def test_adagn_resblock_matches_the_paper_formula():
    """AdaGN(h, y) = y_s GroupNorm(h) + y_b with [y_s - 1, y_b] = Linear(SiLU(emb)) (ADM section 3.1)."""
    from torch.nn import functional as F

    from pipeline.nets.layers import ResBlock
    block = randomize_(ResBlock(16, 32, 24, use_scale_shift_norm=True, norm_groups=8)).eval()
    x, emb = torch.randn(3, 16, 8, 8), torch.randn(3, 32)
    with torch.no_grad():
        h = block.in_conv(F.silu(block.in_norm(x)))
        scale, shift = block.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = block.out_norm(h) * (1 + scale) + shift
        expected = block.skip(x) + block.out_conv(F.silu(h))
        torch.testing.assert_close(block(x, emb), expected, rtol=1e-5, atol=1e-5)


def test_unet_gives_the_same_output_under_inference_mode_and_channels_last():
    net = tiny_unet(16, channel_mult=(1, 2, 2), attention_resolutions=(8, 4), learn_sigma=True)
    x, t, y = torch.randn(3, 3, 16, 16), torch.tensor([5, 500, 995]), torch.tensor([0, 2, 4])
    reference = net(x, t, y)
    with torch.inference_mode():
        fast = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), t, y)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)


ADM_256 = dict(image_size=256, base_channels=256, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
               attention_resolutions=(32, 16, 8), num_head_channels=64, num_classes=1000, learn_sigma=True,
               resblock_updown=True)


@pytest.mark.parametrize("kwargs", [
    dict(image_size=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,)),
    dict(image_size=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(16, 8)),
    dict(image_size=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=()),
    {k: v for k, v in adm_imagenet64_config().items()},
    ADM_256,
])
def test_attention_layer_names_are_the_unets_module_names(kwargs):
    from pipeline.nets.unet import attention_layer_names

    with torch.device("meta"):
        net = UNet(**{"base_channels": 16, "num_head_channels": 8, "num_classes": 4, **kwargs})
    names = attention_layer_names(kwargs["image_size"], kwargs["channel_mult"], kwargs["num_res_blocks"],
                                  kwargs["attention_resolutions"])
    assert names == net.attention_layers
    assert all(isinstance(net.get_submodule(name), AttentionBlock) for name in names)


def test_the_papers_pag_layers_for_adm_are_those_of_its_reference_code():
    """Ahn et al. 2024's code perturbs input_blocks.14.1, 16.1, 17.1 and middle_block.1 of ADM
    ImageNet-256 (run/sample_*.sh, --drop_layers); "paper" picks the same positions in any ADM UNet."""
    from pipeline.nets.unet import attention_layer_names, pag_layers

    names = attention_layer_names(256, ADM_256["channel_mult"], 2, (32, 16, 8))
    assert pag_layers(names, "paper") == {"input_blocks.14.1", "input_blocks.16.1", "input_blocks.17.1",
                                          "middle_block.1"}
    adm64 = adm_imagenet64_config()
    names64 = attention_layer_names(64, adm64["channel_mult"], adm64["num_res_blocks"], adm64["attention_resolutions"])
    assert pag_layers(names64, "paper") == {"input_blocks.13.1", "input_blocks.14.1", "input_blocks.15.1",
                                            "middle_block.1"}
    assert pag_layers(names64, "all") == set(names64) and len(names64) == 9 + 1 + 12
    assert pag_layers(names64, "middle_block.1, input_blocks.5.1") == {"middle_block.1", "input_blocks.5.1"}
    with pytest.raises(ValueError, match="output_blocks.99.1: not a self-attention layer"):
        pag_layers(names64, "output_blocks.99.1")


def test_perturb_layers_limits_the_identity_attention_to_those_layers():
    net = tiny_unet(8)  # attention: input_blocks.3.1, middle_block.1, output_blocks.0.1, output_blocks.1.1
    assert net.attention_layers == ["input_blocks.3.1", "middle_block.1", "output_blocks.0.1", "output_blocks.1.1"]
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([100, 700]), torch.tensor([0, 3])
    plain, every = net(x, t, y), net(x, t, y, perturb_attention=True)
    assert torch.equal(net(x, t, y, perturb_attention=True, perturb_layers=frozenset(net.attention_layers)), every)
    assert torch.equal(net(x, t, y, perturb_attention=True, perturb_layers=frozenset()), plain)
    middle = net(x, t, y, perturb_attention=True, perturb_layers=frozenset({"middle_block.1"}))
    assert float((middle - plain).abs().max()) > 1e-4 and float((middle - every).abs().max()) > 1e-4
