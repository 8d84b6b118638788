import io

import numpy as np
import pytest
from PIL import Image

from mnist_ops.preprocess import (ImageTooLargeError, NoDigitError, NotAnImageError, mnist_pixels, normalize_pixels,
                                  open_image, preprocess)
from mnist_ops.batches import normalize


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def dark_on_white(pixels: np.ndarray, scale: int, canvas: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """An MNIST digit enlarged `scale` times, dark ink on a white canvas, its corner at `at` (row, column)."""
    big = np.asarray(Image.fromarray(pixels).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC))
    page = np.zeros(canvas, dtype=np.uint8)
    page[at[0]:at[0] + 28 * scale, at[1]:at[1] + 28 * scale] = big
    return 255 - page


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28x28 images, at the best relative shift of at most one pixel (centring by
    centre of mass rounds to whole pixels, as MNIST's own centring did)."""
    b = b.astype(np.float64)
    return max(float(np.corrcoef(np.roll(a.astype(np.float64), (dy, dx), axis=(0, 1)).ravel(), b.ravel())[0, 1])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@pytest.mark.integration
def test_mnist_digits_pass_through_as_they_are(mnist_test):
    """MNIST's own construction (20 px box, centre of mass at 14, 14) is what we rebuild: the test digits
    come out nearly unchanged (cropping at 20% of the peak ink drops some faint edge pixels)."""
    digits = mnist_test.images[:500].numpy()
    out = np.stack([mnist_pixels(Image.fromarray(d)) for d in digits])
    assert np.mean([np.array_equal(a, b) for a, b in zip(out, digits)]) > 0.5
    assert min(similarity(a, b) for a, b in zip(out, digits)) > 0.99


@pytest.mark.integration
@pytest.mark.parametrize("scale, canvas, at", [(4, (300, 200), (10, 80)), (10, (600, 900), (300, 5)),
                                               (7, (200, 200), (0, 0))])
def test_big_off_centre_dark_digit_becomes_the_mnist_digit(mnist_test, scale, canvas, at):
    for digit in mnist_test.images[:20].numpy():
        seen = mnist_pixels(Image.fromarray(dark_on_white(digit, scale, canvas, at)))
        assert similarity(seen, digit) > 0.9
        rows, columns = np.nonzero(seen)
        assert max(np.ptp(rows), np.ptp(columns)) + 1 in (20, 21)  # the longer side fits the 20-pixel box
        weights = seen.astype(np.float64)
        centre = [(weights.sum(axis=axis) * np.arange(28)).sum() / weights.sum() for axis in (1, 0)]
        assert np.allclose(centre, 14.0, atol=0.6)


@pytest.mark.integration
def test_colour_and_transparency_give_the_same_digit(mnist_test):
    digit = mnist_test.images[3].numpy()
    gray = dark_on_white(digit, 5, (200, 180), (30, 20))
    expected = mnist_pixels(Image.fromarray(gray))
    ink = (255 - gray).astype(np.float64) / 255
    blue_on_white = np.uint8(np.rint(255 * (1 - ink[..., None]) + np.array([20, 30, 120]) * ink[..., None]))
    alpha = np.uint8(np.rint(255 * ink))
    black_on_transparent = np.dstack([np.zeros_like(alpha)] * 3 + [alpha])
    white_on_transparent = np.dstack([np.full_like(alpha, 255)] * 3 + [alpha])
    for array in (blue_on_white, black_on_transparent, white_on_transparent):
        image = open_image(encode(Image.fromarray(array)))
        assert similarity(mnist_pixels(image), expected) > 0.97
    jpeg = open_image(encode(Image.fromarray(gray).convert("RGB"), "JPEG"))
    assert similarity(mnist_pixels(jpeg), expected) > 0.95
    sixteen_bit = Image.fromarray(gray.astype(np.uint16) * 257)
    assert similarity(mnist_pixels(open_image(encode(sixteen_bit))), expected) > 0.99


@pytest.mark.integration
def test_a_keyed_out_background_stays_the_background(mnist_test):
    """Light ink whose black background was made transparent (alpha 255 wherever a pixel is above 0, a
    colour key; also a palette PNG's transparent index): its opaque fringe of near-black pixels outnumbers
    the bright stroke, and must not make the ink look dark and the digit an outline on white."""
    for digit in mnist_test.images[:10].numpy():
        big = np.asarray(Image.fromarray(digit).resize((280, 280), Image.Resampling.LANCZOS))
        expected = mnist_pixels(Image.fromarray(big))  # the same pixels, opaque
        keyed = np.dstack([big] * 3 + [np.where(big > 0, 255, 0).astype(np.uint8)])
        assert similarity(mnist_pixels(open_image(encode(Image.fromarray(keyed)))), expected) > 0.99
        palette = Image.fromarray(big).convert("P")
        assert similarity(mnist_pixels(open_image(encode_with(palette, transparency=0))), expected) > 0.99


def encode_with(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


@pytest.mark.integration
def test_a_dark_frame_around_white_paper_is_not_the_digit(mnist_test):
    """The background is the grey most of the picture holds, not the outermost ring's: with a black frame (a
    scan's edge) the paper is still the background and the dark strokes the ink, and the frame is peeled off."""
    for digit in mnist_test.images[:10].numpy():
        page = dark_on_white(digit, 5, (180, 180), (20, 20))
        expected = mnist_pixels(Image.fromarray(page))
        for width, grey in ((2, 0), (3, 40)):  # a scan's black edge; a grey border
            framed = page.copy()
            framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = grey, grey, grey, grey
            assert similarity(mnist_pixels(Image.fromarray(framed)), expected) > 0.99
    with pytest.raises(NoDigitError):  # a frame alone is no digit
        mnist_pixels(Image.fromarray(np.pad(np.full((100, 100), 255, np.uint8), 2)))


@pytest.mark.integration
def test_specks_and_a_rounded_frames_corners_do_not_stretch_the_crop(mnist_test):
    """A screenshot of the page's pad has a 2-px border with rounded corners: peeling the frame leaves its corner
    arcs, and a speck of dust on a scan does the same. As ink they stretched the crop to the picture's corners,
    and a small digit stayed small (read as a 1)."""
    from PIL import ImageDraw

    for digit in mnist_test.images[:10].numpy():
        page = dark_on_white(digit, 3, (284, 284), (30, 30))  # a small digit near a corner
        expected = mnist_pixels(Image.fromarray(page))
        framed = Image.fromarray(page)
        ImageDraw.Draw(framed).rounded_rectangle((0, 0, 283, 283), radius=8, outline=68, width=2)
        assert similarity(mnist_pixels(framed), expected) > 0.99
        dusty = page.copy()
        dusty[250:253, 260:263] = 0  # a 3x3 speck far from the digit
        assert similarity(mnist_pixels(Image.fromarray(dusty)), expected) > 0.99


def test_a_bold_digit_cropped_tightly_keeps_its_paper_as_background():
    """More ink than paper (a marker's 1 or 0 cropped close): the paper at the picture's edges is still the
    background, as a median of the whole picture would not have it."""
    from PIL import ImageDraw

    one = Image.new("L", (24, 60), 255)
    ImageDraw.Draw(one).line((16, 2, 8, 57), fill=0, width=15)  # 59% ink
    zero = Image.new("L", (60, 64), 255)
    ImageDraw.Draw(zero).ellipse((2, 2, 57, 61), outline=0, width=16)  # a thick ring, 2 px from the edges
    for picture in (one, zero):  # reads as the same digit with a wide margin of paper around it
        margin = Image.fromarray(np.pad(np.asarray(picture), 60, constant_values=255))
        assert similarity(mnist_pixels(picture), mnist_pixels(margin)) > 0.95
    assert mnist_pixels(zero)[14, 14] < 64  # the hole of the 0 stays background


def test_a_dotted_digit_is_not_all_specks():
    """Every piece of a dot-matrix digit is under the speck share: none is dropped (it raised IndexError)."""
    page = np.full((120, 120), 255, np.uint8)
    for row in range(10, 110, 17):
        for column in range(10, 110, 17):
            page[row:row + 4, column:column + 4] = 0  # a 6 x 6 grid of dots
    assert mnist_pixels(Image.fromarray(page)).max() == 255


def test_an_image_of_no_pixels_is_an_error():
    """An IDX file may declare images of 0 rows or columns; predict reads each as a PIL image."""
    for size in ((28, 0), (0, 28), (0, 0)):
        with pytest.raises(NotAnImageError, match=r"holds no digit"):
            mnist_pixels(Image.new("L", size), "empty[0]")


def test_blank_images_are_an_error_not_a_guess():
    for image in (Image.new("L", (280, 280), 255), Image.new("L", (28, 28), 0), Image.new("RGB", (50, 40), (90, 90, 90)),
                  Image.new("RGBA", (64, 64), (0, 0, 0, 0))):
        with pytest.raises(NoDigitError, match="no digit found"):
            mnist_pixels(open_image(encode(image)))
    faint = np.full((100, 100), 200, dtype=np.uint8)
    faint[40:60, 45:55] = 185  # 15 grey levels of contrast: a smudge, not ink
    with pytest.raises(NoDigitError):
        mnist_pixels(Image.fromarray(faint))


def test_bad_bytes_are_refused_before_decoding(bomb_png):
    with pytest.raises(NotAnImageError, match="not an image"):
        open_image(b"GIF89a but not really")
    with pytest.raises(NotAnImageError, match="empty"):
        open_image(b"")
    png = encode(Image.new("L", (64, 64), 128))
    with pytest.raises(NotAnImageError):
        open_image(png[: len(png) // 2])
    with pytest.raises(NotAnImageError):  # TIFF is not among the accepted formats
        open_image(encode(Image.new("L", (8, 8)), "TIFF"))
    with pytest.raises(ImageTooLargeError, match="8192x8192"):
        open_image(bomb_png)


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_headers_past_pillows_own_bomb_limits_are_one_clean_error(giant_pngs, side):
    import warnings

    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLargeError, match=f"{side * side:,} pixels is more than the 16,777,216"):
            open_image(giant_pngs[side], "big.png")
    assert leaked == []  # Pillow's DecompressionBombWarning stays inside open_image


def test_normalization_matches_training():
    import torch

    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    ours = normalize_pixels(pixels, 0.1307, 0.3081)
    assert ours.shape == (3, 1, 28, 28) and ours.dtype == np.float32
    assert np.allclose(ours, normalize(torch.from_numpy(pixels), 0.1307, 0.3081).numpy(), atol=1e-6)
    prepared = preprocess(Image.fromarray(pixels[0]), 0.1307, 0.3081)
    assert np.allclose(prepared.inputs, normalize_pixels(prepared.pixels, 0.1307, 0.3081))


@pytest.mark.integration
def test_a_strip_of_desk_along_one_side_of_a_photo_is_not_the_digit(mnist_test):
    """A photo of a page with some desk showing along one side: the desk is ink against the paper, and as one
    piece with the digit's it stretched the crop (a 7 read as 1). A piece along half a side or more is dropped."""
    for digit in mnist_test.images[:10].numpy():
        page = dark_on_white(digit, 10, (800, 600), (250, 150))
        expected = mnist_pixels(Image.fromarray(page))
        for rows, columns in ((slice(None), slice(0, 10)), (slice(None), slice(560, None)), (slice(0, 40), slice(None)),
                              (slice(740, None), slice(0, 300))):  # left, right, top, half of the bottom
            photo = page.copy()
            photo[rows, columns] = 90
            assert similarity(mnist_pixels(Image.fromarray(photo)), expected) > 0.99
    tight = np.full((60, 12), 255, np.uint8)
    tight[:, 2:10] = 0  # a 1 cropped to its stroke lies along the top and bottom: all the ink there is, kept
    assert mnist_pixels(Image.fromarray(tight)).any()


def test_a_digit_cropped_to_its_ink_keeps_a_piece_that_lies_along_an_edge():
    """A 5 whose flag is a stroke of its own, cropped to the ink: the flag lies along the top edge, and is the digit's."""
    five = np.full((100, 60), 255, np.uint8)
    five[0:12, 0:60] = 0  # the flag, along the whole top, apart from the rest
    five[18:60, 10:20] = 0  # the stem
    five[50:60, 10:55] = 0  # the belly's top
    five[50:95, 45:55] = 0  # its right side
    five[88:100, 20:46] = 0  # its bottom: under half the bottom edge, not along it
    kept = mnist_pixels(Image.fromarray(five))
    assert kept[4:8].sum() > 0  # the flag's rows, at the top of the 20-pixel box
    assert (kept > 0).sum() > 0.9 * (mnist_pixels(Image.fromarray(np.pad(five, 5, constant_values=255))) > 0).sum()


@pytest.mark.integration
@pytest.mark.parametrize("squared", [False, True])
def test_the_lines_of_ruled_or_squared_paper_are_not_the_digit(mnist_test, squared):
    """A digit written on ruled paper: grey lines across the whole page, the digit's ink over them. The lines were
    ink, so the crop spanned the page's width and the digit came out a few pixels tall (an audit's renderings: 7 of
    10 read right). Squared paper's columns too."""
    for index, digit in enumerate(mnist_test.images[:20].numpy()):
        page = dark_on_white(digit, 8, (400, 360), (90 + 3 * index, 60 + 4 * index))
        expected = mnist_pixels(Image.fromarray(page))
        paper = np.full(page.shape, 255, np.uint8)
        paper[20 + index % 7::40, :] = 150  # ruled lines 2 px thick, every 40 px, from one edge to the other
        paper[21 + index % 7::40, :] = 150
        if squared:
            paper[:, 15::40] = 150
        written = np.minimum(paper, page)  # ink over the lines
        assert similarity(mnist_pixels(Image.fromarray(written)), expected) > 0.85


def slanted_ruled_paper(shape: tuple[int, int], degrees: float, thickness: float, period: int,
                        offset: float) -> np.ndarray:
    """White paper with grey lines `thickness` pixels thick every `period` pixels, slanted by `degrees`."""
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    height = rows - np.tan(np.radians(degrees)) * columns - offset  # rows above each line's centre
    return np.where(np.abs(height - period * np.round(height / period)) < thickness / 2, 150, 255).astype(np.uint8)


@pytest.mark.integration
@pytest.mark.parametrize("degrees", [-4.0, 2.5, 6.0])
def test_ruled_lines_on_a_page_not_held_level_are_not_the_digit(mnist_test, degrees):
    """A photo of ruled paper taken at a slant: the lines climb or fall across the page, so no row is inked across
    it, and before the lines were sought at a slant too the crop spanned them and left the digit small. Wherever the
    lines start: some run out of the picture at the top or bottom (a review found those kept, at offsets 6-18)."""
    for index, digit in enumerate(mnist_test.images[:10].numpy()):
        page = dark_on_white(digit, 8, (400, 360), (90 + 3 * index, 60 + 4 * index))
        expected = mnist_pixels(Image.fromarray(page))
        paper = slanted_ruled_paper(page.shape, degrees, 2.4, 40, 4 * index)
        assert (paper < 255).sum() > 0.05 * paper.size
        assert similarity(mnist_pixels(Image.fromarray(np.minimum(paper, page))), expected) > 0.85


@pytest.mark.integration
def test_ruled_lines_slanted_between_coarse_steps_on_a_wide_photo_are_found(mnist_test):
    """On a 2,600-pixel-wide photo a 2.4-pixel line drifts off a row within 0.03 degrees of its slant: a review found
    3.1 degrees missed by a search in quarter-degree steps."""
    page = dark_on_white(mnist_test.images[3].numpy(), 40, (2000, 2600), (500, 500))
    expected = mnist_pixels(Image.fromarray(page))
    for degrees in (3.1, -5.33):
        paper = slanted_ruled_paper(page.shape, degrees, 2.4, 160, 40)
        assert similarity(mnist_pixels(Image.fromarray(np.minimum(paper, page))), expected) > 0.95


@pytest.mark.integration
@pytest.mark.parametrize("degrees", [0.56, -0.35])
def test_ruled_lines_a_hair_off_level_are_cleared_whole(mnist_test, degrees):
    """Lines off level by under a pixel or a few across the page: cleared as level rows they left ragged pieces (a
    review: 0.39 at 0.56 degrees); they are cleared along their slant."""
    for index, digit in enumerate(mnist_test.images[:5].numpy()):
        page = dark_on_white(digit, 8, (400, 360), (90 + 3 * index, 60 + 4 * index))
        paper = slanted_ruled_paper(page.shape, degrees, 4.0, 40, 4 * index)
        assert similarity(mnist_pixels(Image.fromarray(np.minimum(paper, page))),
                          mnist_pixels(Image.fromarray(page))) > 0.85


@pytest.mark.integration
def test_the_slant_is_found_where_the_coarse_counts_are_flat(mnist_test):
    """A review's page: thick lines at 5.91 degrees, three across it; a search that narrowed in three steps from a
    coarse slant 0.8 degrees off never got back (similarity 0.12)."""
    page = dark_on_white(mnist_test.images[1917].numpy(), 7, (617, 849), (144, 277))
    paper = np.maximum(slanted_ruled_paper(page.shape, -5.91, 6.79, 192, 176.2), 135)
    assert similarity(mnist_pixels(Image.fromarray(np.minimum(paper, page))), mnist_pixels(Image.fromarray(page))) > 0.95


@pytest.mark.integration
@pytest.mark.parametrize(("index", "scale", "radius"), [(106, 8, 6), (30, 10, 12), (140, 8, 0)])
def test_a_blurred_digit_cropped_tightly_is_not_taken_for_slanted_lines(mnist_test, monkeypatch, index, scale, radius):
    """Cropped to a digit and blurred, its strokes cross the picture at a slant in faint bands: a review found a 3's
    bars and a band split in two taken for ruled lines; digit 140, 11 pixels wide, has two slanted strokes."""
    from PIL import ImageFilter

    import mnist_ops.preprocess as preprocess

    digit = mnist_test.images[index].numpy()
    rows, columns = np.nonzero(digit)
    crop = digit[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
    big = Image.fromarray(255 - np.asarray(Image.fromarray(crop).resize((crop.shape[1] * scale, crop.shape[0] * scale),
                                                                          Image.Resampling.BICUBIC)))
    picture = big.filter(ImageFilter.GaussianBlur(radius)) if radius else big
    searched = mnist_pixels(picture)
    monkeypatch.setattr(preprocess, "_slant", lambda mask_rows: None)
    assert np.array_equal(searched, mnist_pixels(picture))


def test_a_digits_own_bar_across_the_picture_is_kept():
    """Cropped to the digit, a 7's bar spans the picture, once and at its edge, and a 2's base, once: not ruled
    lines. Nor is one line under a digit: ruled paper shows two or more."""
    seven = np.full((100, 70), 255, np.uint8)
    seven[0:10, :] = 0  # the bar, across the whole top
    seven[10:100, 45:55] = 0  # the stem
    two = np.full((120, 120), 255, np.uint8)
    two[20:30, 30:90] = 0
    two[30:60, 80:90] = 0
    two[60:100, 30:40] = 0
    two[100:108, 4:116] = 0  # the base, across 93% of the picture, inside it
    underlined = np.full((120, 120), 255, np.uint8)
    underlined[10:90, 55:65] = 0  # a 1
    underlined[100:104, :] = 0  # a line under it, from edge to edge
    from mnist_ops.preprocess import INK_FRACTION, drop_ruled_lines

    for picture in (seven, two, underlined):
        ink = 255.0 - picture.astype(np.float32)
        mask = ink > INK_FRACTION * ink.max()
        assert np.array_equal(drop_ruled_lines(ink.copy(), mask.copy()), mask)


@pytest.mark.integration
def test_a_tightly_cropped_digit_is_not_taken_for_ruled_paper(mnist_test, monkeypatch):
    """Cropped to the digit, a bold 0's sides or a 5's bar and bowl are two bands across the picture, as ruled lines
    are, but in the digit's full ink: a review found 77 of 2,000 such MNIST digits changed by the rule, 9 of them
    beyond recognition, before the rule asked the lines to be fainter than the digit."""
    import mnist_ops.preprocess as preprocess

    ring = np.full((100, 70), 255, np.uint8)
    ring[:, :14] = ring[:, -14:] = ring[:12] = ring[-12:] = 0  # a bold 0, cropped to its ink
    pictures = [ring]
    for digit in mnist_test.images[:300].numpy():
        rows, columns = np.nonzero(digit)
        for margin in (0, 1):
            crop = digit[max(rows.min() - margin, 0):rows.max() + 1 + margin,
                         max(columns.min() - margin, 0):columns.max() + 1 + margin]
            pictures.append(255 - np.asarray(Image.fromarray(crop).resize((crop.shape[1] * 8, crop.shape[0] * 8),
                                                                          Image.Resampling.BICUBIC)))
    with_rule = [mnist_pixels(Image.fromarray(picture)) for picture in pictures]
    monkeypatch.setattr(preprocess, "drop_ruled_lines", lambda ink, mask: mask)
    without = [mnist_pixels(Image.fromarray(picture)) for picture in pictures]
    assert np.array_equal(with_rule[0], without[0])
    assert min(similarity(a, b) for a, b in zip(with_rule, without)) > 0.99  # faint edge rows: 0.995 at worst here


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_is_turned_upright_by_its_exif_orientation_as_pillow_turns_it(kind, orientation):
    """upright() reads the orientation alone and turns the picture as ImageOps.exif_transpose does."""
    from PIL import ImageOps

    from mnist_ops.preprocess import open_image, upright

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    picture.save(buffer, kind, exif=exif.tobytes())
    turned = np.asarray(upright(open_image(buffer.getvalue())))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))
    assert turned.shape[:2] == ((30, 50) if orientation < 5 else (50, 30)) and np.array_equal(turned, expected)
