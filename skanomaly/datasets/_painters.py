"""The four synthetic defect kinds planted by :func:`~skanomaly.datasets.make_defects`.

Each painter returns ``(window, alpha, content)``: ``alpha`` is the opacity
(exactly 0 outside the footprint) and ``content`` the values the defect
paints, both on the window.
"""

import colorsys

import numpy as np
from scipy import ndimage

__all__ = ["DEFECT_KINDS", "DEFECT_PAINTERS"]

#: The kinds of defect :func:`~skanomaly.datasets.make_defects` can plant.
DEFECT_KINDS = ("scratch", "stain", "patch", "smear")

# Opacity below which a defect's footprint is cut to exactly zero, so that the
# returned mask is finite and the image is bit-identical outside it.
_ALPHA_FLOOR = 0.1


# --------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------


def _window(cy, cx, radius, shape):
    """Integer window around (cy, cx) covering ``radius`` pixels, clipped."""
    h, w = shape
    y0 = max(int(np.floor(cy - radius)), 0)
    y1 = min(int(np.ceil(cy + radius)) + 1, h)
    x0 = max(int(np.floor(cx - radius)), 0)
    x1 = min(int(np.ceil(cx + radius)) + 1, w)
    if y1 <= y0:
        y0, y1 = min(max(int(cy), 0), h - 1), min(max(int(cy), 0), h - 1) + 1
    if x1 <= x0:
        x0, x1 = min(max(int(cx), 0), w - 1), min(max(int(cx), 0), w - 1) + 1
    return slice(y0, y1), slice(x0, x1)


def _grid(sl):
    """Pixel-centre coordinates (yy, xx) of a window."""
    yy, xx = np.mgrid[sl[0], sl[1]]
    return yy.astype(np.float64), xx.astype(np.float64)


def _pick_centre(rng, shape, radius):
    """A centre that keeps a defect of ``radius`` inside the image if possible."""
    centre = []
    for side in shape:
        lo = min(radius, (side - 1) / 2.0)
        hi = max(side - 1 - radius, (side - 1) / 2.0)
        centre.append(rng.uniform(lo, hi))
    return centre


def _luminance(pixels):
    """Mean luminance of pixels (..., C) in [0, 1]."""
    if pixels.shape[-1] == 3:
        return float(np.mean(pixels @ np.array([0.299, 0.587, 0.114])))
    return float(np.mean(pixels))


def _weighted_luminance(patch, alpha):
    wsum = alpha.sum()
    if wsum <= 0:
        return _luminance(patch)
    lum = patch @ np.array([0.299, 0.587, 0.114]) if patch.shape[-1] == 3 else patch[..., 0]
    return float((lum * alpha).sum() / wsum)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _floor_alpha(alpha):
    alpha = np.clip(alpha, 0.0, 1.0)
    alpha[alpha < _ALPHA_FLOOR] = 0.0
    return alpha


def _stain_colour(rng, n_channels, dark):
    """A stain colour: dark or light, tinted for RGB images."""
    value = rng.uniform(0.05, 0.3) if dark else rng.uniform(0.7, 0.95)
    if n_channels == 1:
        return np.array([value])
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(0.3, 0.8)
    return np.array(colorsys.hsv_to_rgb(hue, sat, value))



def _scratch(image, extent, rng, pool, index):
    h, w, c = image.shape
    n_seg = rng.randint(1, 4)
    theta = rng.uniform(0.0, np.pi)
    seg_len = extent / n_seg
    points = [np.zeros(2)]
    for _ in range(n_seg):
        theta += rng.normal(0.0, 0.35)
        step = seg_len * np.array([np.sin(theta), np.cos(theta)])
        points.append(points[-1] + step)
    points = np.array(points)
    points -= points.mean(axis=0)
    half = np.abs(points).max(axis=0)
    cy, cx = _pick_centre(rng, (h, w), float(half.max()))
    points += np.array([cy, cx])
    thickness = max(1.0, extent * rng.uniform(0.03, 0.07))

    sl = _window(cy, cx, float(half.max()) + thickness + 1.0, (h, w))
    yy, xx = _grid(sl)
    dist = np.full(yy.shape, np.inf)
    for p, q in zip(points[:-1], points[1:]):
        d = q - p
        length2 = float(d @ d)
        if length2 == 0.0:
            t = np.zeros_like(yy)
        else:
            t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / length2, 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1])))
    # Anti-aliased line: full opacity within thickness / 2, one-pixel ramp.
    alpha = np.clip(thickness / 2.0 + 0.5 - dist, 0.0, 1.0)
    if alpha.max() < _ALPHA_FLOOR:  # degenerate tiny window: mark the centre
        alpha.flat[np.argmin(dist)] = 1.0
    alpha *= rng.uniform(0.85, 1.0)
    alpha = _floor_alpha(alpha)
    local = _weighted_luminance(image[sl], alpha)
    dark = local > 0.5
    value = rng.uniform(0.0, 0.12) if dark else rng.uniform(0.88, 1.0)
    content = np.broadcast_to(np.full(c, value), alpha.shape + (c,))
    return sl, alpha, content


def _stain(image, extent, rng, pool, index):
    h, w, c = image.shape
    radius = max(extent / 2.0, 1.5)
    sigma = max(0.15 * radius, 0.5)
    cy, cx = _pick_centre(rng, (h, w), radius)
    sl = _window(cy, cx, radius + 2.0 * sigma, (h, w))
    yy, xx = _grid(sl)
    shape = np.zeros(yy.shape)
    for _ in range(rng.randint(1, 5)):
        oy, ox = rng.uniform(-0.4, 0.4, size=2) * radius
        a, b = rng.uniform(0.45, 0.8, size=2) * radius
        phi = rng.uniform(0.0, np.pi)
        dy, dx = yy - (cy + oy), xx - (cx + ox)
        u = dy * np.cos(phi) + dx * np.sin(phi)
        v = -dy * np.sin(phi) + dx * np.cos(phi)
        shape = np.maximum(shape, ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(float))
    if shape.max() == 0.0:
        shape[np.unravel_index(np.argmin(np.hypot(yy - cy, xx - cx)), yy.shape)] = 1.0
    blob = ndimage.gaussian_filter(shape, sigma, mode="constant")
    blob /= blob.max()
    # Uneven density inside the stain (low-frequency noise).
    noise = ndimage.gaussian_filter(rng.uniform(size=yy.shape), max(radius / 3.0, 0.5))
    noise = (noise - noise.min()) / max(np.ptp(noise), 1e-12)
    alpha = blob * rng.uniform(0.6, 0.9) * (0.75 + 0.25 * noise)
    alpha = _floor_alpha(alpha)
    if not alpha.any():
        alpha[np.unravel_index(np.argmax(blob), blob.shape)] = 0.6
    dark = _weighted_luminance(image[sl], alpha) > 0.4
    colour = _stain_colour(rng, c, dark)
    content = np.broadcast_to(colour, alpha.shape + (c,))
    return sl, alpha, content


def _patch(image, extent, rng, pool, index):
    h, w, c = image.shape
    side_a = max(extent, 2.0)
    side_b = max(extent * rng.uniform(0.6, 1.0), 2.0)
    radius = 0.5 * np.hypot(side_a, side_b)
    cy, cx = _pick_centre(rng, (h, w), radius)
    theta = rng.uniform(0.0, np.pi)  # orientation of the footprint
    phi = rng.uniform(np.pi / 6.0, 2.0 * np.pi - np.pi / 6.0)  # content rotation
    scale = rng.uniform(0.8, 1.25)

    n_images = len(pool)
    if n_images > 1 and rng.uniform() < 0.5:
        other = rng.randint(n_images - 1)  # any image but this one
        source = pool[other + (other >= index)]
        sy, sx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
    else:
        source = image
        best, best_d = None, -1.0
        for _ in range(20):
            sy, sx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
            d = np.hypot(sy - cy, sx - cx)
            if d >= radius * 1.5:
                best = (sy, sx)
                break
            if d > best_d:
                best, best_d = (sy, sx), d
        sy, sx = best

    sl = _window(cy, cx, radius + 1.0, (h, w))
    yy, xx = _grid(sl)
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(theta) + dx * np.sin(theta)
    v = -dy * np.sin(theta) + dx * np.cos(theta)
    inside = np.minimum(side_a / 2.0 - np.abs(u), side_b / 2.0 - np.abs(v))
    alpha = np.clip(inside + 0.5, 0.0, 1.0)
    if alpha.max() < _ALPHA_FLOOR:
        alpha[np.unravel_index(np.argmax(inside), inside.shape)] = 1.0
    alpha = _floor_alpha(alpha)

    src_y = sy + scale * (dy * np.cos(phi) - dx * np.sin(phi))
    src_x = sx + scale * (dy * np.sin(phi) + dx * np.cos(phi))
    content = np.stack(
        [
            ndimage.map_coordinates(source[..., ch], [src_y, src_x], order=1, mode="mirror")
            for ch in range(c)
        ],
        axis=-1,
    )
    # A foreign patch identical to its surroundings (flat images) would be no
    # defect at all: give it a brightness offset away from the local level.
    weights = alpha[..., None]
    change = float((np.abs(content - image[sl]) * weights).sum() / (weights.sum() * c))
    if change < 0.08:
        level = _weighted_luminance(content, alpha)
        delta = rng.uniform(0.15, 0.3) * (-1.0 if level > 0.5 else 1.0)
        content = np.clip(content + delta, 0.0, 1.0)
    return sl, alpha, content


def _smear(image, extent, rng, pool, index):
    h, w, c = image.shape
    major = max(extent / 2.0, 1.5)
    minor = max(major * rng.uniform(0.35, 0.7), 1.0)
    cy, cx = _pick_centre(rng, (h, w), major)
    theta = rng.uniform(0.0, np.pi)
    sl = _window(cy, cx, major + 1.0, (h, w))
    yy, xx = _grid(sl)
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(theta) + dx * np.sin(theta)
    v = -dy * np.sin(theta) + dx * np.cos(theta)
    ellipse = np.sqrt((u / major) ** 2 + (v / minor) ** 2)
    alpha = _smoothstep((1.0 - ellipse) / 0.4)
    if alpha.max() < _ALPHA_FLOOR:
        alpha[np.unravel_index(np.argmin(ellipse), ellipse.shape)] = 1.0
    alpha = _floor_alpha(alpha)

    # Motion blur along the smear's direction (the smudge), sampled from the
    # whole image so that the blur reaches across the footprint's border.
    length = max(major * rng.uniform(0.5, 1.0), 2.0)
    n_taps = int(np.clip(np.ceil(length), 5, 33))
    offsets = np.linspace(-length / 2.0, length / 2.0, n_taps)
    blurred = np.zeros(yy.shape + (c,))
    for t in offsets:
        coords = [yy + t * np.cos(theta), xx + t * np.sin(theta)]
        for ch in range(c):
            blurred[..., ch] += ndimage.map_coordinates(
                image[..., ch], coords, order=1, mode="mirror"
            )
    blurred /= n_taps
    # Smudging also lowers contrast and leaves a faint film of dirt.
    mean = blurred.reshape(-1, c).mean(axis=0)
    content = mean + (blurred - mean) * (1.0 - rng.uniform(0.2, 0.5))
    if _weighted_luminance(image[sl], alpha) < 0.25:
        content = content + (1.0 - content) * rng.uniform(0.1, 0.25)
    else:
        content = content * rng.uniform(0.78, 0.92)
    return sl, alpha, np.clip(content, 0.0, 1.0)


DEFECT_PAINTERS = {
    "scratch": _scratch,
    "stain": _stain,
    "patch": _patch,
    "smear": _smear,
}
