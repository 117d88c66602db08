"""Audio (A): decode, resample to 16 kHz mono, MFCC (the paper) or log-mel (the official code).

The paper and site say MFCC with frame size 1024 and hop 256; the released code computes an
80-bin mel spectrogram of 12 s at 16 kHz with the same frame/hop and normalises every time column
over the mel axis. Both are offered (``audio_features = mfcc | logmel``), computed with librosa:
torchaudio has no build that loads next to the pinned torch on these machines, so it is not used.
Tokens are time frames (the toolkit loader's orientation), capped at ``max_audio``: by default
contiguous frames are averaged down to the cap so a token sequence still covers the whole clip.
"""

from __future__ import annotations

import functools

import numpy as np


def load_audio(path: str, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Decode to mono float32 at ``sample_rate``, at most ``max_seconds`` long.

    soundfile (libsndfile: WAV, FLAC, OGG, MP3) is tried first; anything it cannot read (AAC, M4A,
    audio inside MP4) is decoded with PyAV. Raises when neither can decode the file.
    """
    import librosa

    try:
        import soundfile as sf

        with sf.SoundFile(path) as f:
            sr = f.samplerate
            y = f.read(frames=int(np.ceil(max_seconds * sr)), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
    except Exception:
        y, sr = _load_with_pyav(path, max_seconds)
    if sr != sample_rate and len(y):
        y = librosa.resample(y, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(y[: int(max_seconds * sample_rate)], dtype=np.float32)


def _load_with_pyav(path: str, max_seconds: float) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    total = 0
    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate)
        # Convert to planar float mono at the native rate; librosa resamples afterwards (as above).
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sr)
        limit = int(np.ceil(max_seconds * sr))
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                a = out.to_ndarray()[0]
                chunks.append(a)
                total += len(a)
            if total >= limit:
                break
    y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return y[:limit].astype(np.float32), sr


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


#: librosa.feature.mfcc's own default number of mel bands under the cepstrum.
MFCC_MELS = 128


def audio_frames(y: np.ndarray, kind: str, sample_rate: int, n_fft: int, hop_length: int, n_mfcc: int,
                 n_mels: int) -> np.ndarray:
    """``[T, D]`` time-frame features of a mono signal (D = n_mfcc or n_mels).

    ``mfcc`` equals ``librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=n_mfcc, n_fft=n_fft,
    hop_length=hop_length)`` (tested); the mel filter bank is built once per process instead of
    once per clip, which is about a third of librosa's time on short clips.
    """
    import librosa

    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=n_fft)) ** 2
    if kind == "mfcc":
        mel = _mel_basis(sample_rate, n_fft, MFCC_MELS) @ power
        m = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=n_mfcc)
    elif kind == "logmel":
        mel = _mel_basis(sample_rate, n_fft, n_mels) @ power
        m = np.log(mel + 1e-6)
        # The official tool normalises each time column by its mean and std over the mel axis.
        m = (m - m.mean(axis=0, keepdims=True)) / (m.std(axis=0, keepdims=True) + 1e-5)
    else:
        raise ValueError(f"unknown audio feature kind {kind!r}")
    return np.ascontiguousarray(m.T, dtype=np.float32)


def reduce_frames(x: np.ndarray, max_tokens: int, how: str) -> np.ndarray:
    """Cap ``[T, D]`` frames at ``max_tokens``: average contiguous groups (``pool``) or keep the first."""
    if len(x) <= max_tokens:
        return x
    if how == "truncate":
        return x[:max_tokens]
    # Group boundaries as in adaptive average pooling: token i averages frames [floor(iT/n), ceil((i+1)T/n)).
    T = len(x)
    out = np.empty((max_tokens, x.shape[1]), dtype=np.float32)
    for i in range(max_tokens):
        a = (i * T) // max_tokens
        b = -((-(i + 1) * T) // max_tokens)
        out[i] = x[a:b].mean(axis=0)
    return out
