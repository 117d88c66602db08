"""Audio front end: decoding/resampling, MFCC against librosa's reference call, log-mel, token cap."""

from __future__ import annotations

import numpy as np
import pytest

from bench.features.audio import audio_frames, load_audio, reduce_frames
from test_features_media import make_mp3, make_wav


@pytest.mark.parametrize("maker,ext", [(make_wav, "wav"), (make_mp3, "mp3")])
def test_mfcc_matches_librosa_reference(tmp_path, maker, ext):
    import librosa

    path = maker(tmp_path / f"a.{ext}", seconds=2.0, freq=523.0, sr=22050)
    y = load_audio(str(path), 16000, 12.0)
    ref_y, sr = librosa.load(str(path), sr=16000, mono=True)  # the reference decode + soxr_hq resample
    assert sr == 16000 and len(y) == len(ref_y)
    np.testing.assert_allclose(y, ref_y, atol=1e-6)
    got = audio_frames(y, "mfcc", 16000, 1024, 256, 40, 80)
    ref = librosa.feature.mfcc(y=ref_y, sr=16000, n_mfcc=40, n_fft=1024, hop_length=256)
    assert got.shape == (1 + len(y) // 256, 40) == ref.T.shape  # tokens are time frames
    np.testing.assert_allclose(got, ref.T, rtol=1e-4, atol=1e-3)


def test_mfcc_separates_tones(tmp_path):
    a = audio_frames(load_audio(str(make_wav(tmp_path / "lo.wav", 1.0, 220.0)), 16000, 12.0), "mfcc", 16000, 1024, 256, 40, 80)
    b = audio_frames(load_audio(str(make_wav(tmp_path / "hi.wav", 1.0, 1760.0)), 16000, 12.0), "mfcc", 16000, 1024, 256, 40, 80)
    a2 = audio_frames(load_audio(str(make_wav(tmp_path / "lo2.wav", 1.0, 220.0)), 16000, 12.0), "mfcc", 16000, 1024, 256, 40, 80)
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 10 * np.linalg.norm(a.mean(0) - a2.mean(0)) + 1e-3


def test_logmel_is_column_normalised(tmp_path):
    y = load_audio(str(make_wav(tmp_path / "a.wav", 1.5, 440.0, sr=16000)), 16000, 12.0)
    m = audio_frames(y, "logmel", 16000, 1024, 256, 40, 80)
    assert m.shape == (1 + len(y) // 256, 80)
    np.testing.assert_allclose(m.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(m.std(axis=1), 1.0, atol=1e-2)


def test_duration_cap_and_pyav_fallback(tmp_path):
    import av

    y = load_audio(str(make_wav(tmp_path / "long.wav", 5.0, 440.0, sr=16000)), 16000, 2.0)
    assert len(y) == 32000
    # AAC in an MP4 container: libsndfile cannot read it, PyAV decodes it.
    path = tmp_path / "a.m4a"
    sr = 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=sr)
        s.layout = "mono"
        for a in range(0, sr, 1024):
            fr = av.AudioFrame.from_ndarray(tone[None, a : a + 1024], format="fltp", layout="mono")
            fr.sample_rate = sr
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    y = load_audio(str(path), 16000, 12.0)
    assert abs(len(y) - sr) < 3000 and np.abs(y).max() > 0.1


def test_unreadable_audio_raises(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(Exception):
        load_audio(str(bad), 16000, 12.0)


def test_reduce_frames():
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    assert reduce_frames(x, 16, "pool") is x
    np.testing.assert_array_equal(reduce_frames(x, 4, "truncate"), x[:4])
    pooled = reduce_frames(x, 5, "pool")
    np.testing.assert_allclose(pooled, x.reshape(5, 2, 2).mean(axis=1))
    uneven = reduce_frames(x, 3, "pool")  # groups [0,4), [3,7), [6,10): adaptive-pool boundaries
    np.testing.assert_allclose(uneven[0], x[0:4].mean(0))
    np.testing.assert_allclose(uneven[2], x[6:10].mean(0))
