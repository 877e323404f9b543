import os
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Layer timings are cached on disk: tests keep theirs apart from the user's cache.
os.environ["LOWRANK_LATENCY_CACHE"] = tempfile.mkdtemp(prefix="lowrank-latency-tests-")

import pytest  # noqa: E402
import torch  # noqa: E402

from lowrank.zoo import ARCHITECTURES  # noqa: E402

torch.set_num_threads(1)


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = ARCHITECTURES[name]().eval()
    # Give BatchNorm non-trivial statistics so that equality checks mean something.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(params=sorted(ARCHITECTURES))
def arch(request):
    return request.param


@pytest.fixture
def x28():
    torch.manual_seed(1)
    return torch.randn(1, 1, 28, 28)
