"""A generated, labelled audio-classification set and its log-spectrogram features.

No package installable in this project ships real raw audio clips, so the audio task uses
waveforms synthesised here (:func:`generate_tones`): one-second clips at 8 kHz of six kinds of
sound. What makes a class is the *shape* of the sound (harmonic content, direction of a glide,
amplitude modulation, a step between two notes), never its absolute pitch, loudness, onset or
playback speed: those vary at random within each class. The usual audio augmentations (pitch
shift, speed change, time shift, added noise; :mod:`pipelines.augment.audio`) are therefore
label-preserving within modest ranges, which is what an augmentation sweep needs.

Augmentation works on raw waveforms, once per epoch, so the features are computed afterwards by
:func:`log_spectrogram`, a pure vectorised numpy function fast enough to run per batch.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 8000
CLIP_SECONDS = 1.0

#: The class names, in label order (label ``i`` is ``TONE_CLASSES[i]``).
TONE_CLASSES: tuple[str, ...] = (
    "pure_tone",
    "harmonic",
    "chirp_up",
    "chirp_down",
    "tremolo",
    "two_tone",
)

_LOWEST_F0, _HIGHEST_F0 = 200.0, 800.0  # Hz, drawn log-uniformly
_SHORTEST, _LONGEST = 0.4, 0.8  # seconds of sound inside the clip
_FADE_SECONDS = 0.01  # raised-cosine fades, so onsets are not clicks
# Harmonics stop below this, leaving headroom for an upward pitch shift before aliasing.
_HARMONIC_CEILING = 3000.0
_MAX_HARMONICS = 8
# Each sound is scaled against a fixed white-noise floor to an SNR (power over the whole clip)
# of 25-35 dB; peak normalisation afterwards removes absolute loudness as a cue.
_NOISE_STD = 0.01
_SNR_RANGE_DB = (25.0, 35.0)

_LOWEST_BAND_HZ = 50.0


def generate_tones(
    clips_per_class: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Synthesise a balanced, labelled set of one-second tone clips (generated, not recorded).

    Every clip draws its own fundamental (200-800 Hz, log-uniform), onset, duration
    (0.4-0.8 s, with 10 ms fades), and amplitude against a fixed white-noise floor (SNR
    25-35 dB). The class decides the shape of the sound:

    * ``pure_tone``: a sine.
    * ``harmonic``: a sawtooth-like sum of harmonics ``k`` with amplitude ``1/k`` (up to 3 kHz).
    * ``chirp_up`` / ``chirp_down``: an exponential glide over 0.8-1.2 octaves, up or down.
    * ``tremolo``: a sine whose amplitude is modulated at 6-10 Hz with depth 0.8.
    * ``two_tone``: two notes, the second a fifth (x1.4-1.6) above the first, switching halfway.

    Each clip is then peak-normalised, so absolute loudness carries no information.

    Args:
        clips_per_class: Clips of each class; the set has ``6 * clips_per_class`` rows.
        seed: Seed of the generator; the same seed gives bit-identical output.

    Returns:
        ``(waves, labels, class_names)``: waves float32 (N, 8000) with ``max |x| == 1`` per
        clip, labels int64 (N,) in class order (``clips_per_class`` of 0, then of 1, ...), and
        :data:`TONE_CLASSES`.

    Raises:
        ValueError: If ``clips_per_class`` is negative.

    """
    if clips_per_class < 0:
        raise ValueError(f"clips_per_class must be >= 0, got {clips_per_class}")
    rng = np.random.default_rng(seed)
    waves = [_one_class(name, clips_per_class, rng) for name in TONE_CLASSES]
    labels = np.repeat(np.arange(len(TONE_CLASSES), dtype=np.int64), clips_per_class)
    return np.concatenate(waves).astype(np.float32), labels, TONE_CLASSES


def _one_class(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``n`` clips of one class, sound plus noise, peak-normalised, float32 (n, T)."""
    # float32 and in-place updates throughout: the time is memory traffic, not arithmetic.
    length = round(SAMPLE_RATE * CLIP_SECONDS)
    t = (np.arange(length, dtype=np.float32) / np.float32(SAMPLE_RATE))[None, :]

    def column(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, (n, 1)).astype(np.float32)

    f0 = np.exp(column(np.log(_LOWEST_F0), np.log(_HIGHEST_F0)))
    duration = column(_SHORTEST, _LONGEST)
    onset = (column(0.0, 1.0) * (CLIP_SECONDS - duration)).astype(np.float32)
    # Every class draws every parameter, so the random streams do not depend on the class.
    octaves, step, rate = column(0.8, 1.2), column(1.4, 1.6), column(6.0, 10.0)
    mod_phase, start_phase = column(0.0, 2 * np.pi), column(0.0, 1.0)
    snr_db = column(*_SNR_RANGE_DB)

    # Progress through the sound: 0 up to its onset, 1 from its end on.
    progress = np.clip((t - onset) / duration, 0.0, 1.0)
    if name == "chirp_up":
        frequency = f0 * np.exp2(octaves * progress)
    elif name == "chirp_down":
        frequency = f0 * np.exp2(octaves * (1.0 - progress))
    elif name == "two_tone":
        frequency = f0 * np.where(progress < 0.5, np.float32(1.0), step)
    else:
        frequency = np.broadcast_to(f0, progress.shape)
    # Integrating the instantaneous frequency keeps the phase continuous through glides and
    # steps. The running sum (in cycles) needs float64; its fractional part fits float32.
    cycles = np.cumsum(frequency, axis=1, dtype=np.float64)
    cycles /= SAMPLE_RATE
    cycles += start_phase
    cycles -= np.floor(cycles)
    theta = cycles.astype(np.float32)
    theta *= np.float32(2 * np.pi)
    sound = np.sin(theta)
    if name == "harmonic":
        # sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x): a multiply-add per harmonic instead
        # of a sine; harmonics above the ceiling get weight 0 for that clip.
        twice_cos = 2 * np.cos(theta)
        previous, current = np.zeros_like(sound), sound
        total = sound.copy()
        for k in range(2, _MAX_HARMONICS + 1):
            previous, current = current, twice_cos * current - previous
            weight = np.where(k * f0 < _HARMONIC_CEILING, np.float32(1.0 / k), np.float32(0.0))
            total += weight * current
        sound = total
    if name == "tremolo":
        # Gain 1 - 0.8 * (1 - cos) / 2: between 0.2 and 1, at 6-10 Hz.
        sound *= 0.6 + 0.4 * np.cos(np.float32(2 * np.pi) * rate * t + mod_phase)

    # Raised-cosine fades; negative distances (outside the sound) clip to a zero envelope.
    fade = np.minimum(t - onset, onset + duration - t)
    fade *= np.float32(1.0 / _FADE_SECONDS)
    np.clip(fade, 0.0, 1.0, out=fade)
    fade *= np.float32(np.pi)
    sound *= 0.5 - 0.5 * np.cos(fade)
    sound /= np.maximum(np.abs(sound).max(axis=1, keepdims=True), np.float32(1e-12))

    # A unit-peak sound scaled against a fixed noise floor sets the clip's SNR.
    power = np.mean(sound**2, axis=1, keepdims=True, dtype=np.float64)
    amplitude = np.sqrt(10.0 ** (snr_db / 10.0) * _NOISE_STD**2 / np.maximum(power, 1e-12))
    sound *= amplitude.astype(np.float32)
    noise = rng.standard_normal(sound.shape, dtype=np.float32)
    noise *= np.float32(_NOISE_STD)
    sound += noise
    sound /= np.abs(sound).max(axis=1, keepdims=True)
    return sound


def band_centres(bins: int = 32) -> np.ndarray:
    """Return the centre frequencies in Hz of the bands of :func:`log_spectrogram`.

    The bands are triangular filters evenly spaced on the mel scale from 50 Hz to the Nyquist
    frequency: roughly linear below 700 Hz and logarithmic above, so no low band is narrower
    than an FFT bin (a purely logarithmic spacing would leave the lowest bands empty).

    Args:
        bins: Number of bands.

    Returns:
        float64 (bins,) ascending centre frequencies.

    """
    return _mel_edges(bins)[1:-1]


def _mel_edges(bins: int) -> np.ndarray:
    """Return ``bins + 2`` edge frequencies in Hz: lower edge, the centres, upper edge."""
    lowest, highest = _hz_to_mel(_LOWEST_BAND_HZ), _hz_to_mel(SAMPLE_RATE / 2)
    edges: np.ndarray = _mel_to_hz(np.linspace(lowest, highest, bins + 2))
    return edges


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0))


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.asarray(700.0 * (10.0 ** (mel / 2595.0) - 1.0))


def _filterbank(bins: int, frame: int) -> np.ndarray:
    """Return the float32 (frame // 2 + 1, bins) triangular weights of the mel bands."""
    edges = _mel_edges(bins)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    freqs = np.fft.rfftfreq(frame, 1.0 / SAMPLE_RATE)[:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    # Peak weight 1: a sine at a band's centre keeps its full power in that band.
    weights: np.ndarray = np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)
    return weights


def log_spectrogram(
    waves: np.ndarray, frame: int = 256, hop: int = 128, bins: int = 32
) -> np.ndarray:
    """Return log mel-band power spectrograms of a batch of waveforms.

    Frames of ``frame`` samples every ``hop`` samples (no padding: only whole frames) are
    Hann-windowed and transformed with one batched real FFT (``scipy.fft.rfft``); their
    power is pooled into ``bins`` triangular mel-spaced bands from 50 Hz to 4 kHz (see
    :func:`band_centres`) and compressed with ``log(power + 1e-6)``.

    Args:
        waves: float (N, T) waveforms at :data:`SAMPLE_RATE`, ``T >= frame``.
        frame: Window and FFT length in samples (256 = 32 ms, 31.25 Hz per FFT bin).
        hop: Samples between frame starts.
        bins: Number of frequency bands.

    Returns:
        float32 (N, 1, bins, frames) with ``frames = 1 + (T - frame) // hop`` (61 for one
        second at the defaults); the axis of length 1 is a channel axis for CNNs, band 0 is the
        lowest frequency.

    Raises:
        ValueError: If ``waves`` is not 2-D or its clips are shorter than one frame.

    """
    waves = np.asarray(waves, dtype=np.float32)
    if waves.ndim != 2 or waves.shape[1] < frame:
        raise ValueError(f"waves must be (N, T) with T >= {frame}, got shape {waves.shape}")
    # A strided view: framing copies nothing until the window is applied.
    frames = sliding_window_view(waves, frame, axis=1)[:, ::hop]
    window = np.hanning(frame + 1)[:-1].astype(np.float32)  # periodic Hann
    # scipy's pocketfft keeps float32 as complex64 and is several times faster here than
    # np.fft, which computes float32 input in float64.
    spectrum = scipy.fft.rfft(frames * window, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # cheaper than abs()**2, no square root
    banded = power.astype(np.float32, copy=False) @ _filterbank(bins, frame)  # (N, frames, bins)
    features: np.ndarray = np.log(banded + np.float32(1e-6)).transpose(0, 2, 1)[:, None]
    return np.ascontiguousarray(features, dtype=np.float32)
