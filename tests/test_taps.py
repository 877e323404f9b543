"""The tap form of a factorised conv (lowrank.kinds.taps): the same output as its two convs,
and taken only where it is allowed and was timed faster."""
import pytest
import torch
from torch import nn

from lowrank.kinds import FactorizedConv2d, conv2d, taps

CL = torch.channels_last

GEOMETRIES = [  # C_in, H, W, kernel, stride, dilation, rank
    (5, 7, 9, (3, 3), (1, 1), (1, 1), 3),
    (4, 6, 5, (5, 3), (2, 1), (1, 2), 2),
    (3, 8, 8, (3, 5), (2, 2), (2, 1), 1),
    (6, 5, 5, (1, 3), (1, 1), (1, 1), 2),
    (6, 5, 5, (3, 1), (1, 2), (1, 1), 4),
    (2, 9, 4, (1, 1), (2, 1), (1, 1), 2),
    (16, 4, 4, (3, 3), (1, 1), (1, 1), 16),
]


def _layer(c_in, kernel, stride, dilation, rank, scheme, bias=True, padding_mode="zeros", padding=None):
    torch.manual_seed(0)
    pad = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)) if padding is None else padding
    dense = nn.Conv2d(c_in, 7, kernel, stride, pad, dilation, bias=bias, padding_mode=padding_mode)
    rows, cols = (7, c_in * kernel[0] * kernel[1]) if scheme == "channel" else (c_in * kernel[0], 7 * kernel[1])
    factors = (torch.randn(rows, rank), torch.rand(rank) + 0.5, torch.randn(rank, cols))
    return FactorizedConv2d.from_dense(dense, rank, scheme, factors).eval()


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
def test_the_tap_form_gives_the_convs_output_channels_last(scheme, geometry, bias):
    c_in, h, w, kernel, stride, dilation, rank = geometry
    layer = _layer(c_in, kernel, stride, dilation, rank, scheme, bias)
    x = torch.randn(3, c_in, h, w).contiguous(memory_format=CL)
    assert taps.fits(layer.first, layer.second)
    with torch.no_grad():
        want, got = layer.second(layer.first(x)), taps.forward(layer.first, layer.second, x)
    assert got.shape == want.shape and got.is_contiguous(memory_format=CL)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))  # sums in another order


def test_padding_other_than_same_zeros_keeps_the_convs():
    reflect = _layer(4, (3, 3), (1, 1), (1, 1), 2, "channel", padding_mode="reflect")
    valid = _layer(4, (3, 3), (1, 1), (1, 1), 2, "spatial", padding=(0, 0))
    assert not taps.fits(reflect.first, reflect.second) and not taps.fits(valid.first, valid.second)


@pytest.fixture
def verdict(monkeypatch):
    """The timing's verdict, set by the test; counts how often a layer asked."""
    asked = {"calls": 0, "faster": True}

    def faster(candidate, incumbent, **_):
        asked["calls"] += 1
        return asked["faster"]
    monkeypatch.setattr(conv2d, "_faster", faster)
    monkeypatch.setattr(taps, "forward", _counting(taps.forward, asked))
    return asked


def _counting(fn, asked):
    def run(*args):
        asked["taps"] = asked.get("taps", 0) + 1
        return fn(*args)
    return run


def test_a_layer_times_each_input_shape_once_and_keeps_the_faster_form(verdict):
    layer = _layer(8, (3, 3), (1, 1), (1, 1), 2, "channel")
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=CL)
    with torch.no_grad():
        want = layer._convs(x)
        first, again = layer(x), layer(x)
        assert verdict["calls"] == 1 and verdict["taps"] == 2  # timed once, then the tap form twice
        torch.testing.assert_close(first, want) and torch.testing.assert_close(again, want)
        verdict["faster"] = False
        layer(torch.randn(2, 8, 6, 6).contiguous(memory_format=CL))  # a new shape: timed, convs kept
        assert verdict["calls"] == 2 and verdict["taps"] == 2


@pytest.mark.parametrize("case", ["training", "nchw", "never", "unsupported"])
def test_the_tap_form_is_not_even_timed_where_it_does_not_apply(verdict, case):
    layer = _layer(8, (3, 3), (1, 1), (1, 1), 2, "channel", padding_mode="reflect" if case == "unsupported" else "zeros")
    x = torch.randn(4, 8, 6, 6)
    if case != "nchw":
        x = x.contiguous(memory_format=CL)
    if case == "never":
        layer.tap_form = "never"
    with torch.set_grad_enabled(case == "training"):
        out = layer(x)
    assert verdict["calls"] == 0 and "taps" not in verdict
    torch.testing.assert_close(out, layer.second(layer.first(x)))


def test_cached_layer_timings_are_keyed_by_the_tap_form_source_too(monkeypatch):
    """A change to the tap form (beside the layer's class) must not reuse the old timings."""
    from pathlib import Path

    from lowrank.kinds import schemes_for
    from lowrank.resources import measured
    dense = nn.Conv2d(4, 6, 3, padding=1)
    scheme = schemes_for(dense)["channel"]
    before = measured.implementation(scheme, dense, 6, 36)
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(self, *a, **k) + ("\n# faster" if self.name == "taps.py" else ""))
    assert measured.implementation(scheme, dense, 6, 36) != before
