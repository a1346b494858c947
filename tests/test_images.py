import numpy as np
import pytest
from PIL import Image

from edge.images import ImageError, load_image


def test_every_mode_becomes_rgb_uint8(tmp_path):
    gray = (np.arange(40 * 30) % 256).astype(np.uint8).reshape(30, 40)
    for mode in ("L", "RGB", "RGBA", "P", "LA", "CMYK", "I;16"):
        image = Image.fromarray(gray).convert(mode) if mode != "I;16" else Image.fromarray(gray.astype(np.uint16) * 256)
        path = tmp_path / f"img_{mode.replace(';', '')}.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
        image.save(path)
        rgb = load_image(path)
        assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8, mode
        assert np.abs(rgb[:, :, 0].astype(int) - gray).max() <= 2, mode


def test_sixteen_bit_is_stretched_to_full_range(tmp_path):
    values = np.linspace(1000, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "twelve_bit.tif")
    rgb = load_image(tmp_path / "twelve_bit.tif")
    assert rgb.min() == 0 and rgb.max() == 255


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    rgb = load_image(tmp_path / "rotated.jpg")
    assert rgb.shape == (40, 20, 3)
    assert rgb[:10].mean() > 200 and rgb[-10:].mean() < 50  # the stripe is now on top


def test_alpha_is_composited_on_black(tmp_path):
    Image.new("RGBA", (8, 8), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").max() == 0


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"not an image at all", "not an image"),
                                             (None, "damaged")])
def test_bad_files_raise_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is None:
        Image.new("RGB", (200, 200), (10, 200, 30)).save(path)
        path.write_bytes(path.read_bytes()[:120])  # truncated
    else:
        path.write_bytes(content)
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert reason in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file_and_animation_are_refused(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")
    frames = [Image.new("RGB", (10, 10), (i * 50, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="animated"):
        load_image(tmp_path / "anim.gif")


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    import edge.images

    monkeypatch.setattr(edge.images, "MAX_PIXELS", 100 * 100)
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")
