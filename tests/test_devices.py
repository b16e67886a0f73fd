"""The one --device argument: names, the automatic choice, and clear errors."""

import pytest
import torch

from cellcascade.devices import resolve_device
from cellcascade.errors import CellcascadeError
from cellcascade.training.loop import make_accelerator


def test_auto_takes_a_gpu_when_there_is_one_and_cpu_stays_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("make", [resolve_device, make_accelerator])
def test_an_unknown_device_is_refused_by_name(make):
    with pytest.raises(CellcascadeError, match="device must be auto, cpu or cuda, not 'gpu'"):
        make("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("make", [resolve_device, make_accelerator])
def test_cuda_without_a_gpu_is_refused(make):
    with pytest.raises(CellcascadeError, match="no CUDA GPU is available"):
        make("cuda")
