"""A model on a GPU compresses on the GPU: masks, moments, SVDs, losses and fine-tuning stay on
the model's device while calibration data may stay on the CPU. Runs where CUDA is available
(the device-agnostic code path itself runs in every CPU test)."""
import pytest
import torch
import torch.nn.functional as F

import lowrank
from lowrank import Budget
from lowrank.resources import count
from lowrank.zoo import LeNet5

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("method", ["cobla", "sensitivity", "exact"])
@pytest.mark.parametrize("basis", ["weight", "activation"])
def test_a_model_on_cuda_compresses_there_from_cpu_calibration_data(method, basis):
    torch.manual_seed(0)
    model = LeNet5().cuda().eval()
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))  # on the CPU
    result = lowrank.compress(model, [(x[:32], y[:32]), (x[32:], y[32:])], Budget(macs=0.5), method=method, basis=basis)
    assert all(p.device.type == "cuda" for p in result.model.parameters())
    assert count(result.model, x[:1], ["macs"])["macs"] <= result.plan.limits["macs"]
    with torch.no_grad():
        out = result.model(x.cuda())
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    opt = torch.optim.SGD(result.model.parameters(), lr=1e-3)
    F.cross_entropy(result.model(x.cuda()), y.cuda()).backward()
    opt.step()
