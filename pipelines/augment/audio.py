"""Random, label-preserving audio augmentation as pure vectorised numpy batch functions.

Augmentation runs on raw waveforms once per epoch, before features are computed (see
:mod:`pipelines.data.audio`), so every transform takes a float32 batch ``(N, T)`` and returns a
new one of the same shape: the input is never modified, each clip draws its own random
parameter from the given generator, and nothing loops over clips in Python. The only loops run
over small constants: the phase vocoder behind the pitch shift scans FFT bins and frames with
whole-batch operations and takes its batch in blocks of 128 clips to stay cache-sized.

Every random transform is a thin wrapper over a deterministic public core that takes one
parameter per clip (:func:`shift_pitch`, :func:`change_speed`, :func:`add_noise`,
:func:`shift_time`), which is what the tests check exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from pipelines.augment.spec import TransformSpec

#: Phase-vocoder frame and hop (samples): 32 ms frames with 4x overlap at 8 kHz.
_PV_FRAME = 256
_PV_HOP = 64
#: Clips per phase-vocoder pass.
_PV_BLOCK = 128
#: Amplitude ratio (30 dB) below which a frame counts as silent and a local maximum as no peak.
_QUIET = np.float32(10 ** (-30 / 20))


def _as_batch(waves: np.ndarray) -> np.ndarray:
    batch = np.asarray(waves, dtype=np.float32)
    if batch.ndim != 2:
        raise ValueError(f"waves must be a 2-D (N, T) batch, got shape {batch.shape}")
    return batch


def _per_clip(values: np.ndarray | float, n: int, name: str) -> np.ndarray:
    array = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def resample(waves: np.ndarray, rates: np.ndarray, length: int | None = None) -> np.ndarray:
    """Play each clip ``rates[i]`` times faster, by linear interpolation (like a tape machine).

    Output sample ``j`` of clip ``i`` is the input read at position ``j * rates[i]``; positions
    past the last input sample give zeros. Nothing filters the input first, so speeding up
    folds content above ``Nyquist / rate`` back down (aliasing), and linear interpolation
    damps high frequencies a little (about 3 % at 900 Hz); for tones far below Nyquist both
    are negligible. A rate of
    exactly 1 reproduces the input bit for bit.

    Args:
        waves: float32 (N, T) batch.
        rates: (N,) positive playback rates (or a scalar for all clips).
        length: Output length; ``T`` when None.

    Returns:
        float32 (N, length).

    Raises:
        ValueError: If a rate is not positive or ``waves`` is not 2-D.

    """
    batch = _as_batch(waves)
    n, size = batch.shape
    rate = _per_clip(rates, n, "rates")
    if np.any(rate <= 0):
        raise ValueError("rates must be > 0")
    length = size if length is None else length
    # float32 positions are exact to ~1e-3 samples here and halve the memory traffic.
    position = np.arange(length, dtype=np.float32)[None, :] * rate.astype(np.float32)[:, None]
    floor = np.floor(position)
    weight = position - floor  # float32, like the batch: no float64 temporaries
    left = np.minimum(floor.astype(np.intp), size - 1)
    # One flat gather per neighbour instead of (rows, columns) fancy indexing; the last sample
    # is its own right neighbour (weight 0 there, so a rate of 1 copies exactly).
    flat = left + (np.arange(n) * size)[:, None]
    before = batch.ravel()[flat]
    after = batch.ravel()[flat + (left < size - 1)]
    out: np.ndarray = before + weight * (after - before)
    out[position > size - 1] = 0.0
    return out.astype(np.float32, copy=False)


def change_speed(waves: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Play each clip ``rates[i]`` times faster: pitch up and duration down by the same factor.

    The result keeps the input length: a faster clip is zero-padded at the end, a slower one
    is cropped at the end. See :func:`resample` for the interpolation and its artefacts.

    Args:
        waves: float32 (N, T) batch.
        rates: (N,) positive playback rates; 1 leaves a clip unchanged.

    Returns:
        A new float32 (N, T) batch.

    """
    return resample(waves, rates)


def stretch_time(waves: np.ndarray, factors: np.ndarray, length: int) -> np.ndarray:
    """Make each clip ``factors[i]`` times longer without changing its pitch (phase vocoder).

    Method: one batched STFT (periodic Hann, 256-sample frames, hop 64) of the zero-padded
    clips. Output frame ``j`` of clip ``i`` reads the input at fractional frame
    ``j / factors[i]`` (magnitudes interpolated linearly) and is overlap-added at hop 64, so
    every clip gets its own factor in the same array operations. Blocks of 128 clips are
    processed in turn, which bounds memory and is 2-3x faster than one pass over 1,024 clips
    (the ~10 working arrays then stay cache-sized).

    Phases decide the quality. Bins near a spectral peak are locked to it ("identity phase
    locking", Laroche & Dolson 1999): each keeps its input phase, rotated by the same amount as
    the peak, so the bins of one partial stay coherent (a plain phase vocoder loses that and a
    sine comes out up to 20 % quieter). Per output frame the rotation grows by the phase the
    peak's bin turns over one hop minus the phase it turned between the two input frames read,
    both measured on that same bin; every bin of a peak's region rotates together and silent
    frames (30 dB below the clip's loudest) do not rotate, so a glide whose peak moves from bin
    to bin stays continuous, and a factor of 1 reconstructs the input (to float32 rounding).
    Phases are handled as unit complex numbers: no ``angle``/``exp`` over the big arrays, which
    would dominate the run time.

    Artefacts, as for any phase vocoder: transients are smeared over about one frame (32 ms);
    partials closer than about two bins (60 Hz) share one peak and beat; noise comes out
    slightly "phasey". Steady tones, glides and note steps come through cleanly.

    Args:
        waves: float32 (N, T) batch.
        factors: (N,) positive stretch factors (> 1 lengthens).
        length: Output length; samples past ``factors[i] * T`` are zero.

    Returns:
        float32 (N, length).

    Raises:
        ValueError: If a factor is not positive or ``waves`` is not 2-D.

    """
    batch = _as_batch(waves)
    n = batch.shape[0]
    factor = _per_clip(factors, n, "factors")
    if np.any(factor <= 0):
        raise ValueError("factors must be > 0")
    if n <= _PV_BLOCK:
        return _stretch_block(batch, factor, length)
    blocks = range(0, n, _PV_BLOCK)
    return np.concatenate(
        [
            _stretch_block(batch[i : i + _PV_BLOCK], factor[i : i + _PV_BLOCK], length)
            for i in blocks
        ]
    )


def _stretch_block(batch: np.ndarray, factor: np.ndarray, length: int) -> np.ndarray:
    """Run :func:`stretch_time` on checked float32 clips and float64 factors."""
    n, size = batch.shape
    frame, hop, half = _PV_FRAME, _PV_HOP, _PV_FRAME // 2
    # A frame of zeros on both sides: every kept output sample then lies under a full set of
    # overlapping windows, so the edges are not attenuated.
    padded = np.pad(batch, ((0, 0), (frame, frame)))
    window = np.hanning(frame + 1)[:-1].astype(np.float32)  # periodic: constant OLA sum
    frames = sliding_window_view(padded, frame, axis=1)[:, ::hop]
    spectrum = scipy.fft.rfft(frames * window, axis=-1)
    # Unit phasors of the bins; the tiny offset gives exactly silent bins phase 0 (not 0/0),
    # so a phase advance out of digital silence is a rotation, never a zero.
    spectrum += np.float32(1e-30)
    magnitude = np.abs(spectrum)
    unit = spectrum * (1 / magnitude)
    count = spectrum.shape[1]

    # Output frame j is centred on output sample j * hop - half; it reads the input at that
    # time divided by the factor, i.e. at a fractional input frame. Beyond the input: silence.
    outputs = -(-(length + frame) // hop)
    centres = np.arange(outputs)[None, :] * hop - half
    where = np.maximum((centres / factor[:, None] + half) / hop, 0.0)
    left = np.minimum(np.floor(where).astype(np.intp), count - 2)
    fraction = (where - left).astype(np.float32)[..., None]
    rows = np.arange(n)[:, None]
    mag = (1 - fraction) * magnitude[rows, left] + fraction * magnitude[rows, left + 1]
    mag[where > count - 1] = 0.0
    before = unit[rows, left]
    # The phase a bin turns between consecutive output frames, minus what it turned in the
    # input between the frames read: zero where output and input advance together
    # (factor 1), one hop's worth where the reading position stays put (stretching).
    turn = unit[rows, left[:, :-1] + 1] * before[:, 1:].conj()

    nearest = _nearest_peaks(mag)
    frame_peak = mag.max(axis=-1, keepdims=True)
    loud = frame_peak > _QUIET * frame_peak.max(axis=1, keepdims=True)
    # Every bin of a region turns with its peak (the same bin at both frames, so the
    # bin-specific analysis phase cancels); silent frames do not turn.
    step = np.take_along_axis(turn, nearest[:, 1:], axis=-1)
    step[~loud[:, 1:, 0]] = 1
    # The accumulated rotation of each bin. A loop over frames of whole-batch products is ~3x
    # faster than ``np.cumprod`` along axis 1; ~160 float32 products of unit phasors drift
    # from unit length by ~1e-5, too little to matter.
    rotation = np.ones_like(before)
    for j in range(1, outputs):
        np.multiply(rotation[:, j - 1], step[:, j - 1], out=rotation[:, j])
    # Identity locking: each bin keeps its input phase, rotated as its region's peak.
    locked = np.take_along_axis(rotation, nearest, axis=-1) * before
    pieces = scipy.fft.irfft(mag * locked, n=frame, axis=-1) * window

    # Overlap-add in frame / hop interleaved groups: the frames of one group do not overlap,
    # so each group is one reshape-and-add; the loop runs over 4 offsets, not over clips.
    overlap = frame // hop
    out = np.zeros((n, outputs * hop + frame), dtype=np.float32)
    for offset in range(overlap):
        group = pieces[:, offset::overlap]
        start = offset * hop
        out[:, start : start + group.shape[1] * frame] += group.reshape(n, -1)
    # Undo the summed squared windows (periodic in the hop; constant for Hann at hop frame/4).
    coverage = (window**2).reshape(overlap, hop).sum(axis=0)
    out.reshape(n, -1, hop)[...] /= coverage
    stretched = out[:, frame : frame + length]
    # Silence past each clip's stretched end (the tail of its last frames).
    stretched[np.arange(length)[None, :] >= factor[:, None] * size] = 0.0
    return np.ascontiguousarray(stretched, dtype=np.float32)


def _nearest_peaks(mag: np.ndarray) -> np.ndarray:
    """Return, for every bin of every frame, the index (intp) of the nearest spectral peak.

    A peak is a local maximum over frequency at most 30 dB below the frame's largest (so every
    frame has at least one: its largest bin). Ties go to the lower peak.
    """
    n, frames, bins = mag.shape
    # Frequency first: each scan over bins is then one vector operation across all frames,
    # many times faster than ``accumulate`` along a short last axis.
    m = np.ascontiguousarray(mag.reshape(-1, bins).T)
    peak = np.empty(m.shape, dtype=bool)
    peak[1:-1] = (m[1:-1] > m[:-2]) & (m[1:-1] >= m[2:])
    peak[0], peak[-1] = m[0] >= m[1], m[-1] > m[-2]
    peak &= m >= _QUIET * m.max(axis=0)
    # Nearest peak at or below / at or above each bin, by scanning the bins up and down: a
    # loop over the 129 bins of one-row vector operations, ~8x faster than ``accumulate``.
    k = np.arange(bins, dtype=np.int16)[:, None]  # int16: a quarter of the memory traffic
    below = np.where(peak, k, np.int16(-bins))
    above = np.where(peak, k, np.int16(2 * bins))
    for b in range(1, bins):
        np.maximum(below[b - 1], below[b], out=below[b])
        np.minimum(above[bins - b], above[bins - b - 1], out=above[bins - b - 1])
    nearest = np.where(k - below <= above - k, below, above)
    return np.ascontiguousarray(nearest.T, dtype=np.intp).reshape(n, frames, bins)


def shift_pitch(waves: np.ndarray, semitones: np.ndarray) -> np.ndarray:
    """Shift each clip's pitch by ``semitones[i]`` while keeping its timing.

    The clip is first time-stretched by ``r = 2 ** (semitones / 12)`` with a phase vocoder
    (:func:`stretch_time`), then played ``r`` times faster (:func:`resample`): the frequencies
    scale by ``r``, the duration returns to the original. Clips with a shift of exactly 0 are
    copied unchanged; the artefacts are those of the two steps (slight transient smearing and
    phasiness; aliasing of content above ``Nyquist / r`` when shifting up).

    Args:
        waves: float32 (N, T) batch.
        semitones: (N,) shifts in semitones (positive is higher), or a scalar for all clips.

    Returns:
        A new float32 (N, T) batch.

    """
    batch = _as_batch(waves)
    n, size = batch.shape
    shift = _per_clip(semitones, n, "semitones")
    out = batch.copy()
    moved = shift != 0
    if np.any(moved):
        ratio = 2.0 ** (shift[moved] / 12.0)
        stretched = stretch_time(batch[moved], ratio, int(np.ceil(ratio.max() * size)) + 1)
        out[moved] = resample(stretched, ratio, size)
    return out


def add_noise(waves: np.ndarray, target_db: float, noise: np.ndarray) -> np.ndarray:
    """Add ``noise`` rescaled per clip so that each clip's SNR is exactly ``target_db``.

    SNR is ``mean(signal ** 2) / mean(noise ** 2)`` over the whole clip, in dB. A silent clip
    (zero power) gets no noise, as no finite noise level has that SNR relative to it.

    Args:
        waves: float32 (N, T) batch.
        target_db: Signal-to-noise ratio in dB.
        noise: (N, T) noise of any scale (each clip's row is rescaled).

    Returns:
        A new float32 (N, T) batch.

    """
    batch = _as_batch(waves)
    signal_power = _power(batch)
    noise = np.asarray(noise, dtype=np.float32)
    noise_power = _power(noise)
    scale = np.sqrt(signal_power / (10.0 ** (target_db / 10.0) * np.maximum(noise_power, 1e-300)))
    out: np.ndarray = batch + noise * scale.astype(np.float32)
    return out


def _power(waves: np.ndarray) -> np.ndarray:
    """Mean square per row, (N, 1) float64, accumulated in float64 without a float64 copy."""
    power: np.ndarray = np.einsum("ij,ij->i", waves, waves, dtype=np.float64)[:, None]
    power /= waves.shape[1]
    return power


def shift_time(waves: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Delay each clip by ``shifts[i]`` samples (negative: advance), filling with zeros.

    Nothing wraps around: samples pushed past either end are dropped.

    Args:
        waves: float32 (N, T) batch.
        shifts: (N,) integer shifts in samples.

    Returns:
        A new float32 (N, T) batch.

    """
    batch = _as_batch(waves)
    n, size = batch.shape
    shift = np.broadcast_to(np.asarray(shifts, dtype=np.intp), (n,))
    source = np.arange(size)[None, :] - shift[:, None]
    inside = (source >= 0) & (source < size)
    out: np.ndarray = np.where(
        inside, batch[np.arange(n)[:, None], np.clip(source, 0, size - 1)], 0
    )
    return out.astype(np.float32, copy=False)


def _check_strength(strength: float, name: str, upper: float | None = None) -> None:
    if not np.isfinite(strength) or strength < 0 or (upper is not None and strength >= upper):
        limit = f" and < {upper}" if upper is not None else ""
        raise ValueError(f"{name} strength must be >= 0{limit}, got {strength}")


def pitch(waves: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Shift each clip's pitch by ``U(-strength, strength)`` semitones, keeping its duration.

    Args:
        waves: float32 (N, T) batch.
        strength: Largest shift in semitones; 0 is the identity.
        rng: Source of the per-clip shifts.

    Returns:
        A new float32 (N, T) batch (see :func:`shift_pitch` for the method).

    """
    _check_strength(strength, "pitch")
    return shift_pitch(waves, rng.uniform(-strength, strength, len(waves)))


def speed(waves: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Play each clip ``U(1 - strength, 1 + strength)`` times faster (pitch and tempo change).

    Args:
        waves: float32 (N, T) batch.
        strength: Largest relative rate change, in [0, 1); 0 is the identity.
        rng: Source of the per-clip rates.

    Returns:
        A new float32 (N, T) batch (see :func:`change_speed`).

    """
    _check_strength(strength, "speed", upper=1.0)
    return change_speed(waves, rng.uniform(1 - strength, 1 + strength, len(waves)))


def snr_db(waves: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at a signal-to-noise ratio of exactly ``strength`` dB per clip.

    Unlike the other transforms this one has no identity strength: to leave clips clean, do
    not apply it. Silent clips stay unchanged.

    Args:
        waves: float32 (N, T) batch.
        strength: Signal-to-noise ratio in dB (any finite value; lower is noisier).
        rng: Source of the noise.

    Returns:
        A new float32 (N, T) batch (see :func:`add_noise`).

    """
    if not np.isfinite(strength):
        raise ValueError(f"snr_db strength must be finite, got {strength}")
    return add_noise(waves, strength, rng.standard_normal(np.shape(waves), dtype=np.float32))


def time_shift(waves: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Shift each clip by ``round(U(-strength, strength) * T)`` samples with zero fill.

    Args:
        waves: float32 (N, T) batch.
        strength: Largest shift as a fraction of the clip length; 0 is the identity.
        rng: Source of the per-clip shifts.

    Returns:
        A new float32 (N, T) batch (see :func:`shift_time`).

    """
    _check_strength(strength, "time_shift")
    n, size = _as_batch(waves).shape
    return shift_time(waves, np.round(rng.uniform(-strength, strength, n) * size).astype(np.intp))


#: The random transforms by name, in the order a pipeline applies them.
#: The audio transforms, in the order the augmentation policy applies them (stream ids: see
#: TransformSpec.stream).
AUDIO_SPECS = (
    TransformSpec("pitch", "audio", "largest pitch shift in semitones", 0, 12, 14, pitch),
    TransformSpec(
        "speed", "audio", "largest relative change of playback speed", 0, 0.5, 15, speed
    ),
    TransformSpec(
        "snr_db",
        "audio",
        "signal-to-noise ratio of added noise in dB",
        -10,
        60,
        16,
        snr_db,
        identity=None,
    ),
    TransformSpec(
        "time_shift", "audio", "largest shift as a fraction of the clip", 0, 0.5, 17, time_shift
    ),
)
#: The audio transform functions by name.
AUDIO_TRANSFORMS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    spec.name: spec.function for spec in AUDIO_SPECS
}
