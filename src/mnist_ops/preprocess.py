"""Turn a picture of a digit, as a person hands it over, into an MNIST-style 28x28 input.

MNIST digits are light ink on black, scaled so the longer side of the digit fits 20 pixels
(aspect ratio kept, anti-aliased) and placed in 28x28 with the centre of mass at the centre
(LeCun et al.'s description of the data set; the mean centre of mass of the test digits is
row 14.0, column 14.0). `preprocess` repeats those steps for any image, so a photo, a canvas
drawing, a small or off-centre digit, or dark ink on white paper reaches the model in the form
it was trained on. An MNIST digit comes out nearly unchanged (most of them pixel for pixel).

numpy, Pillow and scipy.ndimage: predict, serve and the tests all call this one function.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from mnist_ops.errors import UserError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
MAX_PIXELS = 4096 * 4096  # larger images are refused before decoding (decompression bombs)
_PILLOW_WARNINGS = threading.Lock()
BOX = 20  # the longer side of the digit, in pixels
SIZE = 28
CENTRE = 14.0  # where MNIST puts the centre of mass (row and column, 0-based pixel index)
MIN_CONTRAST = 40  # ink must differ from the background by this much (0-255), else "no digit found"
INK_FRACTION = 0.2  # pixels above this fraction of the strongest ink count when cropping (drops faint halos and noise)
# A connected piece of ink under this share of all the ink is a speck, not part of the digit. On MNIST's 10,000 test
# digits it changes the preprocessing of 171, and a lean-8k checkpoint (1 epoch, 10,000 images, batch 32, no EMA)
# read 164 of those right against 162 without it (98.09% against 98.07% on all; `python benchmarks/speck_rule.py
# --checkpoint RUN`, 2026-11-27). 1% left a 3x3 speck beside a small digit (1.4% of its ink).
SPECK_SHARE = 0.03
EDGE_SHARE = 0.5  # a piece of ink along at least half of one side of the picture is not the digit (drop_stray_ink)
RULED_SPAN = 0.8  # rows inked across this share of the picture's width, in 2+ bands inside it: ruled paper's lines
RULED_LEVEL = 0.6  # ... whose ink is under this share of the strongest: printed lines are fainter than the pen's ink
RULED_SLANT = np.tan(np.radians(8.0))  # ... or inked so along a slant up to this: a photo of a page not held level,
RULED_THICKNESS = 0.03  # in bands no thicker than this share of the picture's height (a digit's strokes are thicker)


class NotAnImageError(UserError):
    """The bytes are not a PNG, JPEG, BMP, GIF or WebP image Pillow can decode."""


class ImageTooLargeError(UserError):
    """More pixels than MAX_PIXELS: refused before decoding."""


class NoDigitError(UserError):
    """The image has no ink: a blank page is an error, not a guess."""


@dataclass
class Preprocessed:
    pixels: np.ndarray  # uint8 [28, 28], light ink on black: the image the model sees
    inputs: np.ndarray  # float32 [1, 28, 28], normalized with the model's mean/std


@contextmanager
def _pillow_quietly():
    """Pillow's warnings of a picture's broken metadata (unreadable EXIF, a phone app's) with their own file and line
    kept off stderr: not ours to show. catch_warnings swaps process-wide state, and `serve` decodes on several
    threads: one at a time (a header or an EXIF block read)."""
    with _PILLOW_WARNINGS, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def open_image(content: bytes, name: str = "image") -> Image.Image:
    """Decode PNG/JPEG/BMP/GIF/WebP bytes, refusing non-images and decompression bombs. Pillow reads
    the header first, so the pixel count is checked before any pixel is decoded."""
    if not content:
        raise NotAnImageError(f"{name}: empty (0 bytes)")
    try:
        # Pillow's own bomb check warns at 89M pixels: ours is lower, and one line.
        with _pillow_quietly():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content), formats=FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "its size"
        raise ImageTooLargeError(f"{name}: {size} is more than the {MAX_PIXELS:,} this tool decodes "
                                 "(a decompression bomb?); scale the image down") from None
    except (UnidentifiedImageError, ValueError, OSError, SyntaxError):
        raise NotAnImageError(f"{name}: not an image Pillow can read as {', '.join(FORMATS)}; save it as PNG or "
                              "JPEG") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"{name}: {width}x{height} pixels is more than the {MAX_PIXELS:,} this tool decodes "
                                 "(a decompression bomb?); scale the image down")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise NotAnImageError(f"{name}: corrupt or truncated {image.format} image ({error})") from None
    return image


# EXIF orientation -> the turn that makes the picture upright (ImageOps.exif_transpose's table)
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def upright(image: Image.Image) -> Image.Image:
    """The image as the person who took it saw it (a phone photo's EXIF orientation). A PNG's or WebP's EXIF is
    parsed only here: unreadable, it is read as none (a traceback and a 500 before, 2026-11-28), and Pillow's
    warnings of it are kept off stderr. Only the orientation is read (exif_transpose also writes the rest of the EXIF
    back, which can fail on another broken tag and leave the photo unturned)."""
    with _pillow_quietly():
        try:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        except Exception:  # Pillow raises SyntaxError, struct.error, ValueError... for broken metadata alone
            orientation = 1
    turn = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image if turn is None else image.transpose(turn)


def grayscale(image: Image.Image) -> np.ndarray:
    """float32 [H, W] in 0..255, with a transparent background composited on black or white.

    Which one: the colour the transparent pixels hold, when it differs from the ink's (a light-on-black
    digit whose black was keyed out keeps black there, and its opaque fringe of near-black pixels must
    stay background); else the opposite of the ink's (a drawing app's canvas stores its transparent pixels
    as black whatever the stroke's colour), so transparent canvases of either kind work."""
    image = upright(image)
    if image.mode.startswith("I"):  # 16-bit PNG: convert("L") would clip at 255
        return np.asarray(image, dtype=np.float32) * (255.0 / 65535.0)
    if "A" not in image.getbands() and "transparency" not in image.info:
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = image.convert("RGBA")
    gray = np.asarray(rgba.convert("L"), dtype=np.float32)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    if alpha.sum() == 0:
        return np.zeros_like(gray)
    ink = float((gray * alpha).sum() / alpha.sum())  # the opaque pixels' mean grey
    transparent = gray[alpha == 0]
    stored = float(np.median(transparent)) if transparent.size else ink
    if abs(stored - ink) >= MIN_CONTRAST:
        background = 0.0 if stored < 128 else 255.0
    else:
        background = 255.0 if ink < 128 else 0.0
    return alpha * gray + (1.0 - alpha) * background


def mnist_pixels(image: Image.Image, name: str = "image") -> np.ndarray:
    """The steps that build an MNIST digit, on any image: uint8 [28, 28], light ink on black."""
    gray = grayscale(image)
    if gray.size == 0:  # an IDX file can declare images of 0 rows or columns
        raise NotAnImageError(f"{name}: an image of {image.width}x{image.height} pixels holds no digit")
    # The background is the median grey of the picture's edge band, 5% of its shorter side wide (1 pixel for
    # MNIST's 28): a thin dark frame around white paper (a scan's edge, the page's own pad in a screenshot, 2 px
    # of 284) is a minority there, as it was not in the outermost ring alone; and a bold digit cropped tightly,
    # more ink than paper, still has paper at its edges, which a median of the whole picture missed.
    band = max(1, round(0.05 * min(gray.shape)))
    edge = np.ones(gray.shape, dtype=bool)
    edge[band:-band, band:-band] = False
    background = float(np.median(gray[edge]))
    ink = gray - background if background < 128 else background - gray  # light background: invert
    np.clip(ink, 0, None, out=ink)
    ink = strip_frame(ink)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise NoDigitError(f"{name}: no digit found (the image is blank or has almost no contrast); write the digit "
                           "darker than its background, or lighter on a dark one")
    strokes = drop_stray_ink(ink, drop_ruled_lines(ink, ink > INK_FRACTION * peak))
    rows = np.flatnonzero(strokes.any(axis=1))
    columns = np.flatnonzero(strokes.any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    height, width = ink.shape
    if max(height, width) != BOX:  # anti-aliased resampling to 20 px on the longer side
        scale = BOX / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        ink = np.array(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.float32)
        np.clip(ink, 0, None, out=ink)
    ink *= 255.0 / max(float(ink.max()), 1e-6)  # full contrast, as MNIST's strokes have
    return place_by_centre_of_mass(ink)


def drop_ruled_lines(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The ink mask without the lines of ruled (or squared) paper, cleared in `ink` too (in place): rows inked across
    RULED_SPAN of the picture's width, in two or more bands that do not touch its top or bottom row (and columns so,
    for squared paper), whose ink is fainter than RULED_LEVEL of the strongest. Where the digit crosses a line its
    ink, well above the line's, is kept. Without this the crop spanned the lines' full width and left the digit a
    few pixels tall. Lines on a page not held level are sought along their slant, up to RULED_SLANT: where the slant
    along which most rows are inked across the picture moves its far column by half a pixel or more, the picture is
    sheared by it and 3 or more lines sought there; where it does not, or none are found so, level rows as above.

    A digit cropped tightly can have two such bands of its own (a bold 0's sides, a 5's bar and bowl), but in the
    digit's full ink, not fainter: it is left alone. Lines as dark as the digit are not found."""
    peak = float(ink.max())
    for ink_rows, mask_rows in ((ink, mask), (ink.T, mask.T)):  # rows, then columns (views: writes go through)
        slope = _slant(mask_rows)
        level = slope is None or abs(slope) * mask_rows.shape[1] < 0.5  # its far column moves by under half a pixel
        if level or not _drop_slanted_lines(ink_rows, mask_rows, peak, slope):
            _drop_level_lines(ink_rows, mask_rows, peak)
    return mask


def _drop_level_lines(ink_rows: np.ndarray, mask_rows: np.ndarray, peak: float, inside: np.ndarray | None = None,
                      slanted: bool = False) -> bool:
    """drop_ruled_lines along the rows; True if it cleared lines. `inside`: how many of each row's pixels lie in the
    picture (a sheared picture's rows run out of it at the top and bottom; None: all of them). `slanted`: the rows are
    a guess among many slants, so ask for 3 bands, not 2 (a narrow digit cropped tightly, MNIST's test digit 140, has
    two slanted strokes across it), and for bands thin beside the gaps between them and beside the picture, the
    thickest of them too: ruled lines are; the strokes of a blurred digit cropped tightly are not. Then clear the
    lines' faint ink a row either side of each band too: a line sheared level is ragged by a row (for level lines as
    well, a review found it erasing the faint edges of blurred digits cropped tightly)."""
    width = mask_rows.shape[1]
    inside = np.full(len(mask_rows), width) if inside is None else inside
    full = _across(mask_rows.sum(axis=1), inside, width)
    edges = np.diff(full.astype(np.int8), prepend=0, append=0)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    within = (starts > 0) & (ends < len(full) - 1)
    if np.count_nonzero(within) < (3 if slanted else 2):
        return False
    if slanted:
        thickest = int(np.max(ends - starts + 1))
        if 3 * thickest > np.median(np.diff(starts)) or thickest > RULED_THICKNESS * len(full):
            return False
    level = float(np.median(ink_rows[full][mask_rows[full]]))  # the lines' own ink: most of those rows' ink is theirs
    if level >= RULED_LEVEL * peak:
        return False
    band = np.convolve(full, np.ones(3), mode="same") > 0 if slanted else full
    lines, inked = ink_rows[band], mask_rows[band]
    cleared = inked & (lines < 1.5 * level)
    if not (mask_rows[~band].any() or (inked & ~cleared).any()):
        return False  # nothing but lines: no digit to keep
    ink_rows[band] = np.where(cleared, 0.0, lines)
    mask_rows[band] = inked & ~cleared
    return True


def _across(inked: np.ndarray, inside: np.ndarray, columns: int) -> np.ndarray:
    """Per row, whether it is inked across the picture: in RULED_SPAN of the `inside` pixels it holds of it, and it
    holds a tenth of its `columns` or more (a sheared picture's corner rows hold a few)."""
    return (inked >= RULED_SPAN * inside) & (inside >= 0.1 * columns)


def _shift(slope: float, width: int) -> np.ndarray:
    """Per column, how far a shear by `slope` moves it down (0 at the top-most)."""
    shift = np.round(slope * np.arange(width)).astype(np.intp)
    return shift - shift.min()


def _inside(shift: np.ndarray, height: int, columns: np.ndarray) -> np.ndarray:
    """Per row of the sheared picture, how many of `columns` hold a pixel of the picture there."""
    counts = np.zeros(height + int(shift.max()) + 1, dtype=np.intp)
    np.add.at(counts, shift[columns], 1)
    np.add.at(counts, shift[columns] + height, -1)
    return np.cumsum(counts)[:-1]


def _full_rows(mask_rows: np.ndarray, slopes: np.ndarray, stride: int) -> np.ndarray:
    """For each of `slopes`, how many rows along it are inked across the picture: RULED_SPAN of the columns they
    cross inside it, counted in every `stride`-th column."""
    height, width = mask_rows.shape
    columns = np.arange(0, width, stride)
    rows, sampled = np.nonzero(mask_rows[:, ::stride])
    counts = np.zeros(len(slopes), dtype=np.intp)
    for number, slope in enumerate(slopes):
        shift = _shift(slope, width)
        inside = _inside(shift, height, columns)
        inked = np.bincount(rows + shift[sampled * stride], minlength=len(inside))
        counts[number] = np.count_nonzero(_across(inked, inside, len(columns)))
    return counts


def _shrunk(mask_rows: np.ndarray, columns: int) -> np.ndarray:
    """The mask in blocks of a side that leaves at most `columns` columns; a block with any ink is inked."""
    factor = -(-mask_rows.shape[1] // columns)
    height, width = -(-mask_rows.shape[0] // factor) * factor, -(-mask_rows.shape[1] // factor) * factor
    padded = np.zeros((height, width), dtype=bool)
    padded[:mask_rows.shape[0], :mask_rows.shape[1]] = mask_rows
    return padded.reshape(height // factor, factor, width // factor, factor).any(axis=(1, 3))


def _slant(mask_rows: np.ndarray) -> float | None:
    """The slope (rows per column, up to RULED_SLANT either way) along which most rows of the mask are inked across
    the picture; None when none is. Sought in two steps, each a histogram per slope, not a copy: every slope on the
    mask shrunk to at most 512 columns (a block with any ink is inked), in steps that move its far column by a pixel;
    then, within two of those steps of the best, on every column of the whole mask (every k-th past 512 columns), in
    steps that move the far column by half a pixel: 2.4-pixel lines on a 2,600-pixel-wide page need 0.03 degrees. Of
    equal counts, the slope nearest level."""
    width = mask_rows.shape[1]
    if np.count_nonzero(mask_rows.any(axis=0)) < RULED_SPAN * width:
        return None  # no line crosses the picture (a digit on plain paper): no search (benchmarks/preprocess_speed.py)
    shrunk = _shrunk(mask_rows, 512)
    step = 1.0 / shrunk.shape[1]
    slopes = np.arange(-RULED_SLANT, RULED_SLANT + step / 2, step)
    counts = _full_rows(shrunk, slopes, 1)
    if counts.max() == 0:
        return None
    coarse = slopes[int(np.argmax(counts))]
    fine = np.append(np.arange(coarse - 2 * step, coarse + 2 * step, min(step, 0.5 / width)), 0.0)
    fine = fine[np.abs(fine) <= RULED_SLANT]
    counts = _full_rows(mask_rows, fine, -(-width // 512))
    if counts.max() == 0:
        return None
    best = np.flatnonzero(counts == counts.max())
    return float(fine[best[np.argmin(np.abs(fine[best]))]])


def _drop_slanted_lines(ink_rows: np.ndarray, mask_rows: np.ndarray, peak: float, slope: float) -> bool:
    """_drop_level_lines on the picture sheared by `slope` so that lines along it run level, the result sheared
    back; True if it cleared lines."""
    height, width = mask_rows.shape
    shift = _shift(slope, width)
    at = (np.arange(height)[:, None] + shift[None, :], np.arange(width)[None, :])
    sheared_ink = np.zeros((height + int(shift.max()), width), dtype=ink_rows.dtype)
    sheared_mask = np.zeros(sheared_ink.shape, dtype=bool)
    sheared_ink[at], sheared_mask[at] = ink_rows, mask_rows
    if not _drop_level_lines(sheared_ink, sheared_mask, peak, _inside(shift, height, np.arange(width)), slanted=True):
        return False
    ink_rows[...], mask_rows[...] = sheared_ink[at], sheared_mask[at]
    return True


def drop_stray_ink(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The ink mask without the connected pieces that are not the digit, found in one labelling. Their pixels are
    cleared in `ink` too (in place), so they move no centre of mass.

    - Specks: pieces holding under SPECK_SHARE of the ink (a rounded frame's corners left by strip_frame, dust on a
      scan), which would stretch the crop to the picture's corners and leave the digit small. If every piece is
      that small (a dotted digit), none is a speck.
    - Pieces along the edge: a piece that covers at least EDGE_SHARE of one side (a strip of desk beside the paper
      in a photo, a shadow at the edge, what is left of a frame), so long as other ink remains. A digit crosses an
      edge for the width of a stroke, not along it. A digit cropped to its ink touches all four sides, and its
      pieces may lie along them (a 5's flag): such a picture keeps them."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count < 2:
        return mask
    kept = np.ones(count + 1, dtype=bool)  # by label; 0 is the background
    kept[0] = False
    masses = ndimage.sum_labels(ink, labels, index=np.arange(1, count + 1))
    specks = np.flatnonzero(masses < SPECK_SHARE * masses.sum()) + 1
    if 0 < len(specks) < count:
        kept[specks] = False
    sides = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
    if not all(kept[side].any() for side in sides):  # not cropped to its ink
        along = set()
        for side in sides:
            pieces, contact = np.unique(side[kept[side]], return_counts=True)
            along.update(pieces[contact >= EDGE_SHARE * len(side)].tolist())
        if along and len(along) < int(kept.sum()):
            kept[sorted(along)] = False
    if kept[1:].all():
        return mask
    dropped = mask & ~kept[labels]
    ink[dropped] = 0
    return mask & ~dropped


def strip_frame(ink: np.ndarray) -> np.ndarray:
    """Peel the picture's outer rings of pixels while most of a ring is ink: a frame (a scan's dark edge, a
    drawn box), not the digit, which inks a small part of the picture's edge even when cropped tightly."""
    while min(ink.shape) > 2:
        ring = np.concatenate([ink[0], ink[-1], ink[1:-1, 0], ink[1:-1, -1]])
        if np.mean(ring >= MIN_CONTRAST) < 0.75:
            break
        ink = ink[1:-1, 1:-1]
    return ink


def place_by_centre_of_mass(ink: np.ndarray) -> np.ndarray:
    """Paste a digit of at most 20x20 into 28x28 with its centre of mass at (14, 14), kept inside the frame."""
    height, width = ink.shape
    total = float(ink.sum())
    row = float((ink.sum(axis=1) * np.arange(height)).sum() / total)
    column = float((ink.sum(axis=0) * np.arange(width)).sum() / total)
    top = int(np.clip(round(CENTRE - row), 0, SIZE - height))
    left = int(np.clip(round(CENTRE - column), 0, SIZE - width))
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    canvas[top:top + height, left:left + width] = ink
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def normalize_pixels(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 [..., 28, 28] -> float32 [..., 1, 28, 28] standardized like the training data
    (the same arithmetic as `mnist_ops.batches.normalize`)."""
    x = pixels.astype(np.float32)[..., None, :, :] / np.float32(255.0)
    return (x - np.float32(mean)) / np.float32(std)


def preprocess(image: Image.Image, mean: float, std: float, name: str = "image") -> Preprocessed:
    """THE preprocessing: grayscale (alpha composited), invert a light background, crop to the ink,
    longer side to 20 px, centre of mass at the centre of 28x28, normalize with the model's mean/std."""
    pixels = mnist_pixels(image, name)
    return Preprocessed(pixels, normalize_pixels(pixels, mean, std))
