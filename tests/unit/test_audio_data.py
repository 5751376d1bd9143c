"""The generated tone set, its log spectrograms and the audio augmentations (numpy only, no Ray).

Statistics are measured on the outputs (dominant frequency, envelope duration, SNR, impulse
position) and compared with what the strength promises, rather than with stored outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipelines.augment.audio import (
    AUDIO_TRANSFORMS,
    add_noise,
    change_speed,
    pitch,
    shift_pitch,
    shift_time,
    snr_db,
    speed,
    time_shift,
)
from pipelines.data.audio import (
    CLIP_SECONDS,
    SAMPLE_RATE,
    TONE_CLASSES,
    band_centres,
    generate_tones,
    log_spectrogram,
)

T = round(SAMPLE_RATE * CLIP_SECONDS)
TIME = np.arange(T) / SAMPLE_RATE
STRENGTHS = {"pitch": 2.0, "speed": 0.15, "snr_db": 10.0, "time_shift": 0.1}


def _burst(freq: float | np.ndarray, start: float = 0.25, stop: float = 0.75) -> np.ndarray:
    """Sines (one per frequency) sounding from ``start`` to ``stop`` s with 10 ms fades."""
    freqs = np.atleast_1d(np.asarray(freq, dtype=np.float64))[:, None]
    fade = np.clip(np.minimum(TIME - start, stop - TIME) / 0.01, 0.0, 1.0)
    return (np.sin(2 * np.pi * freqs * TIME) * fade).astype(np.float32)


def _dominant_hz(waves: np.ndarray) -> np.ndarray:
    """Frequency of the largest spectral peak of each clip, to 1/8 Hz."""
    spectrum = np.abs(np.fft.rfft(waves * np.hanning(waves.shape[1]), n=8 * waves.shape[1]))
    return np.asarray(spectrum.argmax(axis=1) * SAMPLE_RATE / (8 * waves.shape[1]))


def _sounding_seconds(waves: np.ndarray) -> np.ndarray:
    """Time each clip's 20 ms RMS envelope spends above half its maximum."""
    width = SAMPLE_RATE // 50
    power = np.cumsum(np.pad(waves.astype(np.float64) ** 2, ((0, 0), (width, 0))), axis=1)
    envelope = np.sqrt((power[:, width:] - power[:, :-width]) / width)
    loud = envelope > 0.5 * envelope.max(axis=1, keepdims=True)
    return np.asarray(loud.sum(axis=1) / SAMPLE_RATE)


def _rms(waves: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt(np.mean(waves.astype(np.float64) ** 2, axis=1)))


# --- the generated data set -------------------------------------------------------------------


def test_generated_set_has_balanced_labels_unit_peaks_and_the_documented_shapes() -> None:
    waves, labels, names = generate_tones(clips_per_class=20, seed=0)
    assert names == TONE_CLASSES and len(names) == 6
    assert waves.shape == (6 * 20, T) and waves.dtype == np.float32
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), np.full(6, 20))
    np.testing.assert_allclose(np.abs(waves).max(axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(waves).all()


def test_generation_is_deterministic_per_seed_and_seeds_differ() -> None:
    first, labels, _ = generate_tones(clips_per_class=5, seed=3)
    again, labels_again, _ = generate_tones(clips_per_class=5, seed=3)
    other, _, _ = generate_tones(clips_per_class=5, seed=4)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.allclose(first, other)


def test_pure_tones_lie_in_the_documented_pitch_and_duration_ranges() -> None:
    waves, labels, names = generate_tones(clips_per_class=40, seed=1)
    tones = waves[labels == names.index("pure_tone")]
    pitches = _dominant_hz(tones)
    assert pitches.min() >= 195 and pitches.max() <= 805
    assert pitches.max() / pitches.min() > 2  # pitch really varies within the class
    durations = _sounding_seconds(tones)
    assert durations.min() >= 0.35 and durations.max() <= 0.85


def _invariant_features(waves: np.ndarray, keep: int = 8) -> np.ndarray:
    # |2-D FFT| of the log spectrogram ignores circular shifts in time and in (log-like)
    # frequency, i.e. onset and pitch, which the labels must not depend on; the slowest
    # ``keep`` modulations along each axis (both signs along bands) carry the shape.
    spectra = np.abs(np.fft.rfft2(log_spectrogram(waves)[:, 0]))
    slow = np.concatenate([spectra[:, :keep, :keep], spectra[:, 1 - keep :, :keep]], axis=1)
    return slow.reshape(len(waves), -1)


@pytest.fixture(scope="module")
def tone_model() -> tuple[Any, np.ndarray, np.ndarray]:
    """A linear classifier fitted on clean clips, plus held-out clips of a new seed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y, _ = generate_tones(clips_per_class=100, seed=0)
    test_x, test_y, _ = generate_tones(clips_per_class=50, seed=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(_invariant_features(train_x), train_y)
    return model, test_x, test_y


def test_classes_are_separable_from_spectrogram_features_on_fresh_clips(
    tone_model: tuple[Any, np.ndarray, np.ndarray],
) -> None:
    model, test_x, test_y = tone_model
    accuracy = model.score(_invariant_features(test_x), test_y)
    assert accuracy > 0.8, f"held-out accuracy {accuracy:.3f} (chance is 1/6)"


@pytest.mark.parametrize(
    ("name", "strength"), [("pitch", 2.0), ("speed", 0.15), ("time_shift", 0.2)]
)
def test_augmented_clips_keep_their_class(
    name: str, strength: float, tone_model: tuple[Any, np.ndarray, np.ndarray]
) -> None:
    # The clean-trained model must still recognise augmented clips. A 30 dB noise floor is
    # re-added first: speed and time shift pad with digital silence, far below the generated
    # noise floor, which a model never trained on it reads as a different sound (a
    # distribution shift that training with the augmentation removes, not a label change).
    model, test_x, test_y = tone_model
    augmented = AUDIO_TRANSFORMS[name](test_x, strength, np.random.default_rng(0))
    floored = snr_db(augmented, 30.0, np.random.default_rng(1))
    accuracy = model.score(_invariant_features(floored), test_y)
    assert accuracy > 0.8, f"{name}={strength}: accuracy {accuracy:.3f}"


# --- log_spectrogram --------------------------------------------------------------------------


def test_log_spectrogram_shape_dtype_and_finite_values() -> None:
    waves, _, _ = generate_tones(clips_per_class=2, seed=0)
    features = log_spectrogram(waves)
    assert features.shape == (12, 1, 32, 1 + (T - 256) // 128)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    other = log_spectrogram(waves, frame=512, hop=256, bins=16)
    assert other.shape == (12, 1, 16, 1 + (T - 512) // 256)
    silent = log_spectrogram(np.zeros((1, T), dtype=np.float32))
    assert np.isfinite(silent).all()  # log(0 + 1e-6), not -inf


def test_a_sines_energy_lands_in_the_band_at_its_frequency() -> None:
    centres = band_centres(32)
    assert np.all(np.diff(centres) > 0) and centres[0] > 50 and centres[-1] < SAMPLE_RATE / 2
    bands = np.array([3, 10, 16, 22, 29])
    loudest = log_spectrogram(_burst(centres[bands], 0.0, 1.0))[:, 0].mean(axis=2).argmax(axis=1)
    np.testing.assert_array_equal(loudest, bands)
    # Between two centres the energy goes to one of the two neighbouring bands.
    between = np.sqrt(centres[bands] * centres[bands + 1])
    loudest = log_spectrogram(_burst(between, 0.0, 1.0))[:, 0].mean(axis=2).argmax(axis=1)
    assert np.all((loudest == bands) | (loudest == bands + 1))


def test_louder_input_gives_larger_log_power() -> None:
    quiet = _burst(440.0, 0.0, 1.0) * 0.1
    soft, loud = log_spectrogram(quiet), log_spectrogram(quiet * 4)
    band = soft[0, 0].mean(axis=1).argmax()
    assert np.all(loud >= soft)
    # Power grows 16x, so the log power in the tone's band rises by log(16).
    np.testing.assert_allclose(loud[0, 0, band] - soft[0, 0, band], np.log(16.0), atol=1e-3)


def test_log_spectrogram_rejects_a_single_waveform() -> None:
    with pytest.raises(ValueError, match="must be"):
        log_spectrogram(np.zeros(T, dtype=np.float32))


# --- contracts shared by every transform ------------------------------------------------------


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    waves, _, _ = generate_tones(clips_per_class=3, seed=5)
    return waves


def test_transforms_are_registered_in_order() -> None:
    assert list(AUDIO_TRANSFORMS) == ["pitch", "speed", "snr_db", "time_shift"]
    assert AUDIO_TRANSFORMS["pitch"] is pitch and AUDIO_TRANSFORMS["speed"] is speed
    assert AUDIO_TRANSFORMS["snr_db"] is snr_db and AUDIO_TRANSFORMS["time_shift"] is time_shift


@pytest.mark.parametrize("name", list(AUDIO_TRANSFORMS))
def test_transform_returns_a_new_float32_batch_and_leaves_the_input_alone(
    name: str, clips: np.ndarray
) -> None:
    before = clips.copy()
    out = AUDIO_TRANSFORMS[name](clips, STRENGTHS[name], np.random.default_rng(0))
    assert out.shape == clips.shape and out.dtype == np.float32
    assert not np.shares_memory(out, clips)
    np.testing.assert_array_equal(clips, before)
    assert np.isfinite(out).all()
    assert not np.allclose(out, clips)


@pytest.mark.parametrize("name", ["pitch", "speed", "time_shift"])
def test_zero_strength_is_the_identity(name: str, clips: np.ndarray) -> None:
    out = AUDIO_TRANSFORMS[name](clips, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, clips)
    assert not np.shares_memory(out, clips)


@pytest.mark.parametrize("name", list(AUDIO_TRANSFORMS))
def test_same_seed_same_output_and_another_seed_differs(name: str, clips: np.ndarray) -> None:
    transform, strength = AUDIO_TRANSFORMS[name], STRENGTHS[name]
    first = transform(clips, strength, np.random.default_rng(7))
    again = transform(clips, strength, np.random.default_rng(7))
    other = transform(clips, strength, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize(("name", "strength"), [("pitch", -1.0), ("speed", 1.0), ("speed", -0.1)])
def test_out_of_range_strengths_are_rejected(
    name: str, strength: float, clips: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="strength"):
        AUDIO_TRANSFORMS[name](clips, strength, np.random.default_rng(0))


# --- pitch ------------------------------------------------------------------------------------


def test_shift_pitch_scales_the_frequency_exactly_and_keeps_duration_and_level() -> None:
    semitones = np.array([-4.0, -2.5, -1.0, 1.0, 2.5, 4.0])
    waves = _burst(np.full(6, 440.0))
    shifted = shift_pitch(waves, semitones)
    np.testing.assert_allclose(_dominant_hz(shifted) / 440.0, 2 ** (semitones / 12), rtol=0.005)
    np.testing.assert_allclose(_sounding_seconds(shifted), _sounding_seconds(waves), rtol=0.05)
    np.testing.assert_allclose(_rms(shifted) / _rms(waves), 1.0, atol=0.05)


def test_shift_pitch_keeps_a_glide_continuous() -> None:
    # A glide moves its spectral peak from FFT bin to bin; phase locking must not lose level
    # (a plain phase vocoder comes out ~15 % quieter with dips wherever the peak changes bin).
    rising = 300.0 * 2 ** np.clip((TIME - 0.25) / 0.5, 0.0, 1.0)
    fade = np.clip(np.minimum(TIME - 0.25, 0.75 - TIME) / 0.01, 0.0, 1.0)
    glide = (np.sin(2 * np.pi * np.cumsum(rising) / SAMPLE_RATE) * fade)[None].astype(np.float32)
    shifted = shift_pitch(np.repeat(glide, 2, axis=0), np.array([-3.0, 3.0]))
    middle = shifted[:, 2800:5200].reshape(2, -1, 200)  # 25 ms pieces, all inside the glide
    level = np.sqrt(2 * np.mean(middle.astype(np.float64) ** 2, axis=2))
    assert level.min() > 0.85 and level.max() < 1.1


def test_random_pitch_shifts_stay_within_the_strength_and_vary_per_clip() -> None:
    strength = 3.0
    shifted = pitch(_burst(np.full(64, 500.0)), strength, np.random.default_rng(1))
    ratios = _dominant_hz(shifted) / 500.0
    assert ratios.min() >= 2 ** (-strength / 12) * 0.99
    assert ratios.max() <= 2 ** (strength / 12) * 1.01
    assert ratios.min() < 2 ** (-strength / 24) and ratios.max() > 2 ** (strength / 24)


def test_shift_pitch_leaves_unshifted_clips_bit_identical() -> None:
    waves = _burst(np.array([300.0, 600.0]))
    out = shift_pitch(waves, np.array([0.0, 2.0]))
    np.testing.assert_array_equal(out[0], waves[0])
    assert not np.allclose(out[1], waves[1])


# --- speed ------------------------------------------------------------------------------------


def test_change_speed_multiplies_frequency_and_divides_duration_by_the_rate() -> None:
    rates = np.array([0.8, 0.9, 1.1, 1.25])
    waves = _burst(np.full(4, 400.0), 0.1, 0.6)
    faster = change_speed(waves, rates)
    np.testing.assert_allclose(_dominant_hz(faster) / 400.0, rates, rtol=0.005)
    np.testing.assert_allclose(_sounding_seconds(faster), 0.5 / rates, rtol=0.05)
    np.testing.assert_array_equal(change_speed(waves, np.ones(4)), waves)


def test_speed_up_pads_the_end_with_zeros_and_slow_down_crops_it() -> None:
    full = _burst(np.array([400.0, 400.0]), 0.0, 1.0)
    out = change_speed(full, np.array([1.25, 0.8]))
    assert np.all(out[0, round(T / 1.25) :] == 0)  # the clip ran out: silence
    assert np.abs(out[1, -100:]).max() > 0.5  # still sounding: the rest was cropped


def test_random_speed_rates_stay_within_the_strength() -> None:
    strength = 0.2
    out = speed(_burst(np.full(64, 400.0), 0.1, 0.6), strength, np.random.default_rng(2))
    ratios = _dominant_hz(out) / 400.0
    assert ratios.min() >= (1 - strength) * 0.995 and ratios.max() <= (1 + strength) * 1.005
    assert ratios.min() < 1 - strength / 2 and ratios.max() > 1 + strength / 2


# --- noise ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [-5.0, 10.0, 30.0])
def test_snr_db_adds_noise_at_exactly_the_requested_ratio(
    target: float, clips: np.ndarray
) -> None:
    noisy = snr_db(clips, target, np.random.default_rng(3))
    measured = 10 * np.log10(_rms(clips) ** 2 / _rms(noisy - clips) ** 2)
    np.testing.assert_allclose(measured, target, atol=0.1)


def test_noise_is_white_and_independent_per_clip_and_silence_stays_silent() -> None:
    waves = np.vstack([_burst(np.full(2, 440.0)), np.zeros((1, T), dtype=np.float32)])
    noise = snr_db(waves, 0.0, np.random.default_rng(4)) - waves
    assert not np.allclose(noise[0], noise[1])
    assert abs(np.corrcoef(noise[0, 1:], noise[0, :-1])[0, 1]) < 0.05  # no colouring
    np.testing.assert_array_equal(noise[2], 0.0)
    scaled = add_noise(waves, 20.0, np.ones((3, T)))  # the core rescales any given noise
    np.testing.assert_allclose(scaled[0] - waves[0], _rms(waves[:1])[0] / 10, rtol=1e-3)


# --- time shift -------------------------------------------------------------------------------


def test_shift_time_moves_samples_and_fills_with_zeros() -> None:
    waves = np.random.default_rng(5).standard_normal((2, T)).astype(np.float32)
    out = shift_time(waves, np.array([5, -7]))
    np.testing.assert_array_equal(out[0, 5:], waves[0, :-5])
    np.testing.assert_array_equal(out[0, :5], 0.0)
    np.testing.assert_array_equal(out[1, :-7], waves[1, 7:])
    np.testing.assert_array_equal(out[1, -7:], 0.0)


def test_random_time_shift_moves_an_impulse_by_at_most_the_strength_and_never_wraps() -> None:
    strength, count = 0.1, 200
    impulses = np.zeros((count, T), dtype=np.float32)
    impulses[:, T // 2] = 1.0
    out = time_shift(impulses, strength, np.random.default_rng(6))
    np.testing.assert_array_equal(np.count_nonzero(out, axis=1), 1)  # moved, not smeared
    offsets = out.argmax(axis=1) - T // 2
    assert np.abs(offsets).max() <= round(strength * T)
    assert offsets.min() < -strength * T / 2 and offsets.max() > strength * T / 2
    # An impulse near the end pushed past it disappears instead of coming back at the start.
    edge = np.zeros((count, T), dtype=np.float32)
    edge[:, -10] = 1.0
    out = time_shift(edge, strength, np.random.default_rng(6))
    late = offsets > 10  # same rng: same shifts as above
    assert late.any()
    np.testing.assert_array_equal(out[late], 0.0)
    np.testing.assert_array_equal(out[~late].sum(axis=1), 1.0)
