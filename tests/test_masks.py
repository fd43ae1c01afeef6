"""Properties of mask preparation and per-step quantization (ALGORITHM.md section 3)."""
import pytest
import torch

from semantic_draw import masks as M
from semantic_draw.errors import SemanticDrawError

LEVELS = torch.tensor([0.9977, 0.9942, 0.9735, 0.8499, 0.5840, 0.0], dtype=torch.float64)


def random_masks(seed=0, p=3, size=48):
    g = torch.Generator().manual_seed(seed)
    raw = (torch.rand(p, size // 8, size // 8, generator=g) > 0.5).float()
    return torch.nn.functional.interpolate(raw[None], size=(size, size), mode="nearest")[0]


@pytest.mark.parametrize("mode", ["discrete", "continuous", "semi-continuous"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantized_masks_only_grow(mode, seed):
    soft = M.prepare(random_masks(seed), 0.3, [4.0, 2.0, 0.0], [1.0, 0.7, 0.9])
    steps = M.quantize(soft, LEVELS, mode)
    assert steps.shape == (5,) + soft.shape
    assert (steps[1:] >= steps[:-1]).all()
    assert steps.min() >= 0 and steps.max() <= 1


def test_continuous_has_the_same_area_of_ones_as_discrete():
    soft = M.prepare(random_masks(3), 0.3, [6.0, 3.0, 1.0], [1.0, 0.8, 0.95])
    discrete = M.quantize(soft, LEVELS, "discrete")
    continuous = M.quantize(soft, LEVELS, "continuous")
    assert torch.equal(continuous == 1, discrete == 1)
    # ... and a ramp below it: some pixels strictly between 0 and 1 at some step.
    assert ((continuous > 0) & (continuous < 1)).any()
    semi = M.quantize(soft, LEVELS, "semi-continuous")
    assert torch.equal(semi[:-1], discrete[:-1]) and torch.equal(semi[-1], continuous[-1])


def test_weaker_masks_start_later():
    soft = torch.stack([torch.ones(8, 8), torch.full((8, 8), 0.9), torch.full((8, 8), 0.5)])
    first = M.quantize(soft, LEVELS, "discrete").flatten(2).amax(2).argmax(0)
    assert first.tolist()[:2] == [0, 3]
    assert M.quantize(soft, LEVELS, "discrete")[:, 2].max() == 0  # 0.5 < the last level 0.584: never appears


def test_later_layers_cover_earlier_ones_by_cover_alpha():
    raw = torch.zeros(3, 16, 16)
    raw[0] = 1
    raw[1, :, :8] = 1
    raw[2, :8] = 1
    out = M.cover(raw, 0.3)
    assert torch.equal(out[2], raw[2])                       # the top layer is never covered
    assert torch.allclose(out[1][:8, :8], torch.tensor(0.3))  # under layer 2
    assert torch.equal(out[1][8:, :8], torch.ones(8, 8))      # nothing above
    covered0 = (raw[1] > 0) | (raw[2] > 0)
    assert torch.allclose(out[0][covered0], torch.tensor(0.3))
    assert torch.equal(out[0][~covered0], torch.ones(int((~covered0).sum())))


def test_blur_zero_is_identity_and_blur_keeps_mass():
    m = random_masks(4)[0]
    assert torch.equal(M.blur(m, 0.0), m)
    b = M.blur(m, 3.0)
    assert not torch.equal(b, m)
    assert b.min() >= 0 and b.max() <= 1
    centre = torch.zeros(41, 41)
    centre[20, 20] = 1
    assert abs(M.blur(centre, 2.0).sum().item() - 1.0) < 1e-4


def test_strength_scales_and_latent_sampling_takes_block_centres():
    raw = torch.ones(1, 16, 16)
    assert torch.allclose(M.prepare(raw, 0.3, [0.0], [0.4]), torch.full((1, 16, 16), 0.4))
    pix = torch.arange(256.0).view(16, 16)
    lat = M.to_latent(pix, 8)
    assert lat.shape == (2, 2) and lat[0, 0] == pix[4, 4] and lat[1, 1] == pix[12, 12]


def test_unknown_quantization_is_a_user_error():
    with pytest.raises(SemanticDrawError, match="quantization"):
        M.quantize(torch.ones(1, 4, 4), LEVELS, "fuzzy")


@pytest.mark.parametrize("stds", [[8.0, 0.0, 3.0], [0.0, 0.0, 0.0], [1.5, 12.0, 5.0]])
def test_preparing_on_the_latent_grid_equals_sampling_the_full_masks(stds):
    raw = random_masks(5, size=96)[:, :, :80]        # not square: rows and columns both checked
    full = M.prepare(raw, 0.3, stds, [1.0, 0.6, 0.9])
    direct = M.prepare(raw, 0.3, stds, [1.0, 0.6, 0.9], factor=8)
    assert direct.shape == (3, 12, 10)
    assert torch.allclose(direct, M.to_latent(full, 8), atol=1e-6)
