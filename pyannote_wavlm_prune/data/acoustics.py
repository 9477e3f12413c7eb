"""Room and noise: the two degradations a simulated conversation may get.

Both draw every random number from the generator they are given, so a
conversation is reproducible from its seed alone.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def impulse_response(
    rng: np.random.Generator, rt60: float, direct_to_reverberant: float
) -> np.ndarray:
    """Return a synthetic room impulse response: a unit direct path then decaying noise.

    The reverberant tail is Gaussian noise under an exponential envelope that loses
    60 dB in `rt60` seconds, the textbook statistical model of late reverberation.

    Parameters
    ----------
    rng : np.random.Generator
        Source of the tail's noise.
    rt60 : float
        Reverberation time, in seconds.
    direct_to_reverberant : float
        Energy ratio of the direct path to the tail, in dB.

    Returns
    -------
    response : np.ndarray
        Shape (num_taps,), with ``num_taps = rt60 * 16000``.
    """
    num_taps = max(2, int(rt60 * SAMPLE_RATE))
    time = np.arange(1, num_taps) / SAMPLE_RATE
    # amplitude envelope 10^(-3 t / rt60) is -60 dB in energy at t = rt60
    tail = rng.standard_normal(num_taps - 1) * 10.0 ** (-3.0 * time / rt60)
    tail *= np.sqrt(10.0 ** (-direct_to_reverberant / 10.0) / np.sum(tail**2))
    return np.concatenate([[1.0], tail])


def reverberate(waveform: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Return `waveform` (shape (num_samples,)) convolved with `response`, same length.

    The tail that rings past the end is cut: the conversation's length is fixed.
    """
    # overlap-add: a long signal and a short response, twice as fast as one big FFT
    # scipy.signal is imported here, not with the module: it takes seconds, and the command
    # line reads protocols (this package) before it reports a mistake
    from scipy.signal import oaconvolve

    return oaconvolve(waveform, response)[: len(waveform)]


def colored_noise(rng: np.random.Generator, num_samples: int, exponent: float) -> np.ndarray:
    """Return unit-power Gaussian noise with a 1/f^`exponent` power spectrum.

    `exponent` 0 is white noise, 1 pink, 2 brown: one parameter spans the hums and
    hisses of real recording rooms well enough for training.

    Returns
    -------
    noise : np.ndarray
        Shape (num_samples,).
    """
    # made longer, to a length with small prime factors (FFT of a large prime length is
    # ten times slower), then cut
    from scipy.fft import next_fast_len

    length = next_fast_len(num_samples, real=True)
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequency = np.arange(len(spectrum), dtype=np.float64)
    frequency[0] = 1.0  # leave DC as is rather than divide by zero
    noise = np.fft.irfft(spectrum / frequency ** (exponent / 2.0), n=length)[:num_samples]
    noise -= noise.mean()
    return noise / np.sqrt(np.mean(noise**2))
