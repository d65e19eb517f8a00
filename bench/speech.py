"""Speech for the benchmarks: espeak-ng sentences a call centre or a diary might hold, each in
several voices (the GPU machine has no espeak-ng: `--save-speech` there carries it over)."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

SR = 16_000
SENTENCES = [
    "I have been waiting for my refund for three weeks now and nobody calls me back.",
    "Thank you so much, that is exactly what I needed to hear today.",
    "Could you please check the status of my order, the number is four five two one.",
    "This is the third time I am calling about the same problem, I am really upset.",
    "Good morning, how can I help you with your account?",
    "Oh no, I am afraid the parcel was lost somewhere between the depot and my house.",
    "Let me transfer you to my colleague who handles billing questions.",
    "Honestly I do not know what to say, it just keeps happening again and again.",
    "That is wonderful news, please tell the team I said thank you.",
    "I understand your frustration and I will do my best to solve it right away.",
    "Wait, what do you mean the contract was cancelled last month?",
    "We are sorry for the inconvenience, a replacement will be shipped tomorrow morning.",
    "Today I felt a little better, I went for a walk and talked to my sister.",
    "I could not sleep again last night and everything feels heavy this morning.",
]
VOICES = [("en-us", 50, 160), ("en-gb", 40, 150), ("en-us+f3", 70, 185), ("en-us+m3", 35, 140),
          ("en-gb+f2", 60, 170)]


def espeak_pieces() -> list[np.ndarray]:
    """Every sentence in every voice, 16 kHz mono float32, in that order."""
    from core.media.audio import decode
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, text in enumerate(SENTENCES):
            for j, (voice, pitch, speed) in enumerate(VOICES):
                wav = Path(d) / f"{i}-{j}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed),
                                "-w", str(wav), text], check=True, capture_output=True)
                out.append(decode(wav).samples.mean(axis=0))
    return out
