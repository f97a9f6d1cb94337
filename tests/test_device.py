import pytest
import torch

from tensorgp.engine.device import available_devices, resolve_device


def test_cpu_resolves():
    assert resolve_device("cpu") == torch.device("cpu")
    assert "cpu" in available_devices()


@pytest.mark.parametrize("spec", ["bogus", "meta", "cuda:7", "cuda" if not torch.cuda.is_available() else "cuda:99"])
def test_unavailable_devices_name_themselves(spec):
    with pytest.raises(ValueError, match=f"'{spec}'.*available: cpu"):
        resolve_device(spec)
