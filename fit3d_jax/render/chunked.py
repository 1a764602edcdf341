"""The pure-JAX tile rasterizer (``backend="jax"``, the TPU path): sorted tile lists blended in
fixed-size chunks of depth-sorted Gaussians, with a hand-written backward.

It computes the function of ``ffi_kernels/`` (and of :func:`reference.rasterize_dense`): the
same binning boxes, thresholds, front-to-back acceptance and depth order with ties broken by
index. Why it is shaped this way:

* Binning is static-shaped: intersections are enumerated Gaussian by Gaussian in depth order
  (one stable sort of N depth keys), then one stable sort by tile id (plain int32 keys) leaves
  every tile's list front to back. ``isect_capacity`` bounds the entries; more is an error that
  names it (and poisons the outputs with NaN), never a silent truncation. Tile lists have no
  length limit of their own.
* Blending walks the lists in chunks of ``CHUNK`` = 64 entries, all tiles in lock-step (a
  ``while_loop`` whose trip count is the longest list, in chunks, or less: it stops when every
  pixel's transmittance fell below the threshold; ``tile_batches`` > 1 runs tiles sorted by
  list length in that many groups instead). 64 measured best on an H200 (32 and 128 were
  slower; 128 also needs a third more memory): saturated pixels waste at most one chunk. A chunk is dense work: alpha is a
  (256 pixels, CHUNK) matrix per tile, its transmittance an in-chunk cumulative product times
  the carry, and the colour/depth/feature sums one (256, CHUNK) x (CHUNK, 4 + C) matrix
  product per tile (float32, ``Precision.HIGHEST``). The old formulation blended each tile's
  whole (padded) list at once; chunks with early exit do the work the lists need.
* The backward is the same algebra transposed (as the 3DGS kernels do): it walks the chunks back
  to front from the final transmittance (dividing by each chunk's product), recomputes the
  chunk's alphas, keeps only contributions up to each pixel's last accepted one (saved by the
  forward, so forward and backward agree on the accepted set exactly), and adds each chunk's
  per-entry gradients into the per-Gaussian sums with one scatter-add per chunk. Nothing per
  (pixel, entry) is stored, so memory stays at one chunk's temporaries.

Feature gradients reach only the features unless ``feature_geometry`` (the weights' gradient
ignores the feature cotangent otherwise); extents get no gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fit3d_jax.render.reference import ALPHA_MAX, ALPHA_MIN, TILE, TRANSMITTANCE_MIN, Raster, pixel_rect

PIXELS = TILE * TILE
CHUNK = 64
# Per-Gaussian table gathered per chunk: mean (2), conic (3), opacity, box x0 x1 y0 y1 (4, as
# floats: exact below 2^24), then the blended values: colour (3), depth, features (C).
_GEOMETRY = 10
_HI = jax.lax.Precision.HIGHEST


def _cumprod(x):
    """Inclusive product along the last axis (a reduce-window: plain products, no logarithms)."""
    return jax.lax.cumprod(x, axis=x.ndim - 1)


def _sum_behind(x):
    """Exclusive reverse sum along the last axis: out[i] = sum_{j > i} x[j]."""
    incl = jax.lax.cumsum(x, axis=x.ndim - 1, reverse=True)
    return jnp.concatenate([incl[..., 1:], jnp.zeros_like(incl[..., :1])], -1)


def _shift_in_one(q):
    """Exclusive product from the inclusive one: [1, q0, q1, ...]."""
    return jnp.concatenate([jnp.ones_like(q[..., :1]), q[..., :-1]], -1)


def _ordered_keys(x):
    """int32 keys ordering float32 values like the floats (-0 = 0 aside)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _bin(means2d, extents, depths, width, height, isect_capacity):
    """Per tile, the start and size of its front-to-back list in ``owners`` (isect_capacity,).

    Returns (owners, start (T,), size (T,), boxes (N, 4) float, n_isect, overflow)."""
    n = means2d.shape[0]
    ntx, nty = -(-width // TILE), -(-height // TILE)
    n_tiles = ntx * nty
    x0, x1, y0, y1, hit = pixel_rect(means2d, extents, width, height)
    tx0, ty0 = x0 // TILE, y0 // TILE
    cols = x1 // TILE - tx0 + 1
    count = jnp.where(hit, cols * (y1 // TILE - ty0 + 1), 0)
    # Enumerate the intersections Gaussian by Gaussian front to back (ties by index: stable).
    _, by_depth = jax.lax.sort((_ordered_keys(depths), jnp.arange(n, dtype=jnp.int32)), num_keys=1, is_stable=True)
    ends = jnp.cumsum(count[by_depth])
    slot = jnp.arange(isect_capacity, dtype=jnp.int32)
    rank = jnp.minimum(jnp.searchsorted(ends, slot, side="right"), n - 1)
    owner = by_depth[rank]
    local = slot - (ends[rank] - count[owner])
    used = slot < ends[-1]
    tile = jnp.where(used, (ty0[owner] + local // cols[owner]) * ntx + tx0[owner] + local % cols[owner], n_tiles)
    sorted_tile, owners = jax.lax.sort((tile, owner), num_keys=1, is_stable=True)
    tiles = jnp.arange(n_tiles, dtype=jnp.int32)
    start = jnp.searchsorted(sorted_tile, tiles, side="left").astype(jnp.int32)
    size = jnp.searchsorted(sorted_tile, tiles, side="right").astype(jnp.int32) - start
    n_isect = ends[-1]
    # An int32 sum can wrap for absurd scenes; a float32 sum cannot (and is exact enough to see it).
    overflow = (n_isect > isect_capacity) | (jnp.sum(count.astype(jnp.float32)) > 1.5 * isect_capacity)
    boxes = jnp.stack([x0, x1, y0, y1], -1).astype(jnp.float32)
    boxes = jnp.where(hit[:, None], boxes, -1.0)  # an empty box never matches a pixel
    return owners, start, size, boxes, n_isect, overflow


def _raise_on_overflow(n_isect, overflow, isect_capacity):
    if overflow:
        raise ValueError(
            f"fit3d_jax pure-JAX rasterizer: {int(n_isect)} tile intersections exceed isect_capacity={isect_capacity}; "
            "raise isect_capacity (rasterize(..., isect_capacity=...))."
        )


def _table(means2d, conics, opacities, colors, depths, features, boxes):
    """(N + 1, 10 + 4 + C): the per-Gaussian rows a chunk gathers; the last row is a dummy that
    never contributes (opacity 0, empty box), the target of list padding."""
    rows = jnp.concatenate([means2d, conics, opacities[:, None], boxes, colors, depths[:, None], features], -1)
    dummy = jnp.zeros((1, rows.shape[1]), rows.dtype).at[0, 6:10].set(-1.0)
    return jnp.concatenate([rows, dummy], 0)


def _tile_pixels(tiles, ntx):
    """(Tb,) tile ids -> pixel column and row indices (Tb, 256, 1), as float32."""
    lx, ly = jnp.arange(PIXELS) % TILE, jnp.arange(PIXELS) // TILE
    px = (tiles % ntx)[:, None] * TILE + lx
    py = (tiles // ntx)[:, None] * TILE + ly
    return px.astype(jnp.float32)[..., None], py.astype(jnp.float32)[..., None]


def _chunk(k, table, owners, start, size, px, py):
    """Chunk k of every tile of a batch: (entries (Tb, K) into the table, their rows (Tb, K, F),
    positions (K,)) and the per-(pixel, entry) splat: alpha, kept, unclamped, falloff, dx, dy,
    each (Tb, 256, K). Same arithmetic as reference._composite."""
    n = table.shape[0] - 1
    pos = k * CHUNK + jnp.arange(CHUNK, dtype=jnp.int32)
    in_list = pos < size[:, None]
    idx = jnp.minimum(start[:, None] + pos, owners.shape[0] - 1)
    g = jnp.where(in_list, owners[idx], n)
    rows = table[g]
    col = lambda i: rows[:, None, :, i]
    dx = col(0) - (px + 0.5)
    dy = col(1) - (py + 0.5)
    sigma = 0.5 * (col(2) * dx * dx + col(4) * dy * dy) + col(3) * dx * dy
    falloff = jnp.exp(-sigma)
    raw = col(5) * falloff
    alpha = jnp.minimum(ALPHA_MAX, raw)
    inbox = (px >= col(6)) & (px <= col(7)) & (py >= col(8)) & (py <= col(9))
    kept = inbox & (sigma >= 0) & (alpha >= ALPHA_MIN)
    return g, rows, pos, jnp.where(kept, alpha, 0.0), kept, raw < ALPHA_MAX, falloff, dx, dy


def _forward_batch(table, owners, tiles, start, size, width, height):
    """Blends one batch of tiles: (sums (Tb, 256, 4 + C), final transmittance (Tb, 256), last
    accepted list position (Tb, 256), -1 for none)."""
    px, py = _tile_pixels(tiles, -(-width // TILE))
    tb, d = tiles.shape[0], table.shape[1] - _GEOMETRY
    n_chunks = (jnp.max(size) + CHUNK - 1) // CHUNK

    def cond(state):
        k, probe = state[0], state[1]
        return (k < n_chunks) & jnp.any((probe >= TRANSMITTANCE_MIN) & (k * CHUNK < size)[:, None])

    def body(state):
        k, probe, trans, last, sums = state
        _, rows, pos, alpha, kept, *_ = _chunk(k, table, owners, start, size, px, py)
        # probe: the product over every kept alpha so far; a contribution is accepted while the
        # transmittance after it stays >= 1e-4, and once one is rejected the probe stays below
        # the threshold, so blending stops at the first rejection (per pixel).
        q = _cumprod(1.0 - alpha)
        after = probe[..., None] * q
        accepted = kept & (after >= TRANSMITTANCE_MIN)
        weights = jnp.where(accepted, alpha * probe[..., None] * _shift_in_one(q), 0.0)
        sums = sums + jnp.matmul(weights, rows[..., _GEOMETRY:], precision=_HI)
        # Transmittance: the probe up to the first rejection (it only decreases).
        trans = jnp.minimum(trans, jnp.min(jnp.where(after >= TRANSMITTANCE_MIN, after, 1.0), -1))
        last = jnp.maximum(last, jnp.max(jnp.where(accepted, pos, -1), -1))
        return k + 1, after[..., -1], trans, last, sums

    ones = jnp.ones((tb, PIXELS), jnp.float32)
    # Pixels of partial tiles beyond the image are done from the start (nothing would ever stop
    # them, and they would keep the loop going to the end of the lists).
    inside = ((px < width) & (py < height))[..., 0]
    init = (jnp.int32(0), jnp.where(inside, 1.0, 0.0), ones, jnp.full((tb, PIXELS), -1, jnp.int32), jnp.zeros((tb, PIXELS, d), jnp.float32))
    _, _, trans, last, sums = jax.lax.while_loop(cond, body, init)
    return sums, trans, last


def _backward_batch(grads, table, owners, tiles, start, size, ntx, trans, last, cot, cot_trans, feature_geometry):
    """Adds one batch's gradients (per table row: mean 2, conic 3, opacity, colour 3, depth,
    features C) into ``grads`` (N, 10 + C), walking its chunks back to front."""
    px, py = _tile_pixels(tiles, ntx)
    geometric = cot if feature_geometry else cot[..., :4]  # colour and depth (and features)
    behind_final = (cot_trans * trans)[..., None]  # the final transmittance's term

    def cond(state):
        return state[0] >= 0

    def body(state):
        k, t_end, behind, grads = state
        g, rows, pos, alpha, kept, unclamped, falloff, dx, dy = _chunk(k, table, owners, start, size, px, py)
        accepted = kept & (pos <= last[..., None])
        alpha = jnp.where(accepted, alpha, 0.0)
        q = _cumprod(1.0 - alpha)
        t_start = t_end / q[..., -1]
        t_front = t_start[..., None] * _shift_in_one(q)  # transmittance in front of each entry
        weights = alpha * t_front
        values = rows[..., _GEOMETRY:]
        u = jnp.matmul(geometric, jnp.swapaxes(values[..., : geometric.shape[-1]], 1, 2), precision=_HI)
        wu = weights * u
        later = behind[..., None] + _sum_behind(wu) + behind_final
        d_alpha = jnp.where(accepted, t_front * u - later / (1.0 - alpha), 0.0)
        d_sigma = jnp.where(unclamped, -alpha * d_alpha, 0.0)
        conic = rows[..., 2:5]
        s = lambda x: jnp.sum(x * d_sigma, 1)
        s_dx, s_dy = s(dx), s(dy)
        d_mean = jnp.stack([conic[..., 0] * s_dx + conic[..., 1] * s_dy, conic[..., 1] * s_dx + conic[..., 2] * s_dy], -1)
        d_conic = jnp.stack([0.5 * s(dx * dx), s(dx * dy), 0.5 * s(dy * dy)], -1)
        d_opacity = jnp.sum(jnp.where(unclamped, d_alpha * falloff, 0.0), 1)
        d_values = jnp.matmul(jnp.swapaxes(weights, 1, 2), cot, precision=_HI)
        entry = jnp.concatenate([d_mean, d_conic, d_opacity[..., None], d_values], -1)
        # List padding points at the dummy row n, out of the bounds of grads: dropped.
        grads = grads.at[g.reshape(-1)].add(entry.reshape(-1, entry.shape[-1]), mode="drop")
        return k - 1, t_start, behind + jnp.sum(wu, -1), grads

    init = (jnp.max(last) // CHUNK, trans, jnp.zeros_like(trans), grads)
    return jax.lax.while_loop(cond, body, init)[3]


def _to_tiles(x, ntx, nty):
    """(H, W, ...) -> (T, 256, ...), zero-padded to whole tiles."""
    h, w = x.shape[:2]
    x = jnp.pad(x, [(0, nty * TILE - h), (0, ntx * TILE - w)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape((nty, TILE, ntx, TILE) + x.shape[2:])
    return jnp.swapaxes(x, 1, 2).reshape((ntx * nty, PIXELS) + x.shape[4:])


def _from_tiles(x, ntx, nty, width, height):
    """(T, 256, ...) -> (H, W, ...)."""
    x = x.reshape((nty, ntx, TILE, TILE) + x.shape[2:])
    x = jnp.swapaxes(x, 1, 2).reshape((nty * TILE, ntx * TILE) + x.shape[4:])
    return x[:height, :width]


def _batched_tiles(start, size, tile_batches):
    """Tiles sorted by list length (longest first), padded with empty tiles to whole batches:
    (tile ids, starts, sizes) each (batches, Tb), and the inverse order (T,)."""
    n_tiles = start.shape[0]
    tb = -(-n_tiles // tile_batches)
    pad = tb * tile_batches - n_tiles
    keyed = jnp.concatenate([size, jnp.full((pad,), -1, jnp.int32)])
    _, order = jax.lax.sort((-keyed, jnp.arange(n_tiles + pad, dtype=jnp.int32)), num_keys=1, is_stable=True)
    start = jnp.concatenate([start, jnp.zeros((pad,), jnp.int32)])[order]
    size = jnp.maximum(keyed[order], 0)
    inverse = jnp.argsort(order)[:n_tiles]
    shape = (tile_batches, tb)
    return order.reshape(shape), start.reshape(shape), size.reshape(shape), inverse


def _forward(means2d, conics, opacities, colors, depths, features, extents, width, height, isect_capacity, tile_batches):
    ntx, nty = -(-width // TILE), -(-height // TILE)
    owners, start, size, boxes, n_isect, overflow = _bin(means2d, extents, depths, width, height, isect_capacity)
    jax.debug.callback(functools.partial(_raise_on_overflow, isect_capacity=isect_capacity), n_isect, overflow)
    table = _table(means2d, conics, opacities, colors, depths, features, boxes)
    tiles, b_start, b_size, inverse = _batched_tiles(start, size, tile_batches)
    per_batch = lambda x: _forward_batch(table, owners, *x, width, height)
    sums, trans, last = jax.lax.map(per_batch, (tiles, b_start, b_size))
    sums, trans, last = (x.reshape((-1,) + x.shape[2:])[inverse] for x in (sums, trans, last))
    image = lambda x: jnp.where(overflow, jnp.nan, _from_tiles(x, ntx, nty, width, height))
    raster = Raster(rgb=image(sums[..., :3]), features=image(sums[..., 4:]), depth=image(sums[..., 3]), trans=image(trans))
    return (raster, n_isect), (owners, start, size, last, trans, table, overflow)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10, 11))
def _rasterize(
    means2d,
    conics,
    opacities,
    colors,
    depths,
    features,
    extents,
    width: int,
    height: int,
    feature_geometry: bool,
    isect_capacity: int,
    tile_batches: int,
) -> tuple[Raster, jnp.ndarray]:
    """The accumulated images (see :class:`reference.Raster`) and the number of tile
    intersections. ``tile_batches`` splits the tiles, sorted by list length, into that many
    lock-step groups run one after the other (each stops at its own longest list)."""
    return _forward(means2d, conics, opacities, colors, depths, features, extents, width, height, isect_capacity, tile_batches)[0]


def _rasterize_fwd(means2d, conics, opacities, colors, depths, features, extents, width, height, feature_geometry, isect_capacity,
                   tile_batches):
    return _forward(means2d, conics, opacities, colors, depths, features, extents, width, height, isect_capacity, tile_batches)


def _rasterize_bwd(width, height, feature_geometry, isect_capacity, tile_batches, res, cot):
    owners, start, size, last, trans, table, overflow = res
    raster_cot = cot[0]
    ntx, nty = -(-width // TILE), -(-height // TILE)
    n, c = table.shape[0] - 1, table.shape[1] - _GEOMETRY - 4
    values = jnp.concatenate([raster_cot.rgb, raster_cot.depth[..., None], raster_cot.features], -1)
    values, cot_trans = _to_tiles(values, ntx, nty), _to_tiles(raster_cot.trans, ntx, nty)
    tiles, b_start, b_size, _ = _batched_tiles(start, size, tile_batches)
    order = tiles.reshape(-1)
    valid = order < start.shape[0]
    pick = lambda x: x[jnp.minimum(order, start.shape[0] - 1)].reshape(tiles.shape + x.shape[1:])
    b_last = jnp.where(valid.reshape(tiles.shape)[..., None], pick(last), -1)
    b_trans, b_values, b_cot_trans = pick(trans), pick(values), pick(cot_trans)

    def step(grads, x):
        t, s, z, lst, tr, v, ct = x
        return _backward_batch(grads, table, owners, t, s, z, ntx, tr, lst, v, ct, feature_geometry), None

    grads = jnp.zeros((n, 10 + c), jnp.float32)
    grads, _ = jax.lax.scan(step, grads, (tiles, b_start, b_size, b_last, b_trans, b_values, b_cot_trans))
    grads = jnp.where(overflow, jnp.nan, grads)
    d_means2d, d_conics, d_opacities = grads[:, :2], grads[:, 2:5], grads[:, 5]
    d_colors, d_depths, d_features = grads[:, 6:9], grads[:, 9], grads[:, 10:]
    return d_means2d, d_conics, d_opacities, d_colors, d_depths, d_features, jnp.zeros_like(table[:n, :2])


_rasterize.defvjp(_rasterize_fwd, _rasterize_bwd)
# One program (also when called eagerly: op-by-op dispatch would compile every loop separately).
rasterize = jax.jit(_rasterize, static_argnums=(7, 8, 9, 10, 11))
