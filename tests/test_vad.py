import numpy as np

from core.media.audio import SAMPLE_RATE
from ingest.options import IngestOptions
from ingest.vad import VadStream, merge, speech_spans, split_long
from tests.audio_gen import silence, speak


def test_finds_speech_and_the_pause_between(speech):
    spans = speech_spans(speech, IngestOptions())
    assert len(spans) == 2, spans
    first_end, second_start = spans[0][1], spans[1][0]
    assert second_start - first_end > 0.6  # the one-second pause in the fixture


def test_nothing_in_silence_or_noise():
    opts = IngestOptions()
    assert speech_spans(silence(5.0), opts) == []
    noise = np.random.default_rng(1).normal(0, 0.001, 5 * SAMPLE_RATE).astype(np.float32)
    assert speech_spans(noise, opts) == []


def test_long_speech_is_split_under_the_maximum():
    x = np.concatenate([speak("one two three four five six seven eight nine ten " * 3)] * 2)
    spans = speech_spans(x, IngestOptions(max_segment_s=4.0, merge_gap_s=1.0))
    assert spans and max(e - s for s, e in spans) <= 4.0 + 1e-6
    assert sum(e - s for s, e in spans) > 0.6 * x.size / SAMPLE_RATE


def test_merge_and_split_rules():
    assert merge([(0.0, 1.0), (1.2, 2.0), (3.0, 4.0)], 0.3) == [(0.0, 2.0), (3.0, 4.0)]
    x = np.ones(10 * SAMPLE_RATE, np.float32)
    x[int(4.5 * SAMPLE_RATE):int(4.6 * SAMPLE_RATE)] = 0.0  # the quietest point
    pieces = split_long(x, 0.0, 10.0, 6.0)
    assert abs(pieces[0][1] - 4.5) < 0.03 and pieces[-1][1] == 10.0


def test_streamed_vad_equals_the_whole_pass():
    """Fed in uneven pieces, VadStream ends with exactly speech_spans' segments, and every
    segment it called closed on the way is one of them."""
    x = np.concatenate([speak("hello there"), silence(0.35), speak("I am upset about my bill"),
                        silence(0.8), speak("please help"), silence(0.3)])
    opts = IngestOptions(max_segment_s=2.0)  # long speech is split too
    whole = speech_spans(x, opts)
    for step in (1234, 8000):
        vad, closed, n = VadStream(opts), set(), 0
        while n < x.size:
            n = min(x.size, n + step)
            vad.feed(x, n)
            closed |= set(vad.closed(vad.spans(x, n)))
        assert vad.spans(x, n, final=True) == whole
        assert closed and closed <= set(whole)


def test_torch_free_vad_gives_silero_s_own_spans(speech, call_audio):
    """ingest.vad runs silero's ONNX model and state machine without importing silero_vad
    (which imports torch); both must give the spans silero's own function gives."""
    from silero_vad import get_speech_timestamps_sequence, load_silero_vad

    from ingest.vad import probabilities, timestamps
    model = load_silero_vad(sequence=True)
    rng = np.random.default_rng(5)
    noisy = speech + rng.normal(0, 0.02, speech.size).astype(np.float32)
    clips = [speech, call_audio[0], call_audio[1], noisy, np.concatenate([speech] * 6)]
    for opts in (IngestOptions(), IngestOptions(vad_threshold=0.3, merge_gap_s=0.1,
                                                speech_pad_s=0.2)):
        for x in clips:
            want = get_speech_timestamps_sequence(
                x, model, sampling_rate=SAMPLE_RATE, threshold=opts.vad_threshold,
                min_speech_duration_ms=int(opts.min_segment_s * 1000),
                min_silence_duration_ms=int(opts.merge_gap_s * 1000),
                speech_pad_ms=int(opts.speech_pad_s * 1000))
            np.testing.assert_array_equal(probabilities(x), model.audio_forward(x))
            got = timestamps(probabilities(x), x.size, opts.vad_threshold,
                             int(opts.min_segment_s * 1000), int(opts.merge_gap_s * 1000),
                             int(opts.speech_pad_s * 1000))
            assert got == [(w["start"], w["end"]) for w in want]
            assert got  # speech was found, so the comparison covered the state machine
