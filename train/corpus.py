"""``wavae data``: build a training corpus offline, with nothing downloaded.

    wavae data --out DIR [--recipe default|varied] [--minutes N] [--sample-rate 24000] [--seed 0]

Two domains, about half the minutes each:

- ``DIR/strings/``: MIDI phrases this module writes itself (seeded melodies,
  chords and bass lines for string ensemble, violin, viola, cello, contrabass,
  pizzicato and tremolo strings, plus piano, flute, clarinet, oboe and harp),
  rendered by the fluidsynth program with the FluidR3 GM soundfont;
- ``DIR/speech/``: sentences held below, spoken by espeak-ng with several
  languages, voice variants, speeds and pitches (flite when espeak-ng is absent).

Three recipes.  ``default`` (6 minutes) is the one above, quick enough for CI and
``make data``.  ``varied`` (24 minutes) is for a model meant to play: it adds
brass, reeds, organ, guitars, mallets, choir and synth voices from the same
soundfont, and widens the speakers' pitch and speed ranges; its files carry the
recipe's name, so both can share a folder.  ``solo`` (2 minutes, strings only) is
violin, viola and cello melodies alone, one note at a time: held-out clips on
which an f0 tracker means something (``wavae evaluate``'s f0 target).

Files are mono 16-bit wav at the target rate, trimmed and peak-normalised, each
written atomically. File ``i`` of a domain depends only on (seed, domain, i), so
a second run skips the files already there and a larger ``--minutes`` extends
the corpus. ``build_corpus()`` is the same recipe for Python callers.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from wavae.fileio import atomic_path
from wavae.progress import Progress

from .data import AudioError, DataError, load_audio

log = logging.getLogger(__name__)

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SOUNDFONT_ENV = "WAVAE_SOUNDFONT"
DOMAINS = ("strings", "speech")
PEAK = 0.9  # peak level after normalisation
MIN_RATE, MAX_RATE = 8000, 96000  # fluidsynth's synth.sample-rate range
TOOL_TIMEOUT_S = 300


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tools:
    fluidsynth: str
    soundfont: Path
    speech: tuple[str, str]  # ("espeak-ng" | "flite", path to the program)


def find_tools(soundfont: str | os.PathLike | None = None) -> Tools:
    """The programs the recipe needs, or a DataError with the apt-get command that installs them."""
    sf2 = Path(soundfont or os.environ.get(SOUNDFONT_ENV) or DEFAULT_SOUNDFONT)
    fluidsynth = shutil.which("fluidsynth")
    espeak, flite = shutil.which("espeak-ng"), shutil.which("flite")
    missing, packages = [], []
    if fluidsynth is None:
        missing.append("the fluidsynth program")
        packages.append("fluidsynth")
    if not sf2.is_file():
        missing.append(f"the soundfont {sf2}")
        if sf2 == DEFAULT_SOUNDFONT:
            packages.append("fluid-soundfont-gm")
    if espeak is None and flite is None:
        missing.append("a speech synthesiser (espeak-ng or flite)")
        packages.append("espeak-ng")
    if missing:
        fix = f"install them with: sudo apt-get install -y {' '.join(packages)}" if packages else ""
        if sf2 != DEFAULT_SOUNDFONT and not sf2.is_file():
            fix += ("; and " if fix else "") + f"pass an existing .sf2 with --soundfont (or ${SOUNDFONT_ENV})"
        raise DataError(f"cannot build the corpus: missing {', '.join(missing)}; {fix}")
    check_soundfont(sf2)
    speech = ("espeak-ng", espeak) if espeak else ("flite", flite)
    return Tools(fluidsynth, sf2, speech)


def check_soundfont(path: Path) -> None:
    """Refuse a file that is not a SoundFont 2 (RIFF ``sfbk``): fluidsynth would fall back
    to its default soundfont without a word, and the corpus would not be what was asked."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise DataError(f"cannot read the soundfont {path}: {e.strerror or e}") from e
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise DataError(f"{path} is not a SoundFont 2 file (.sf2); pass a General MIDI .sf2 with --soundfont "
                        f"(the default is {DEFAULT_SOUNDFONT}, from the fluid-soundfont-gm package)")


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise DataError(f"{what} took more than {TOOL_TIMEOUT_S} s: {' '.join(cmd)}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-500:]
        raise DataError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


# ------------------------------------------------------------------------ strings


@dataclass(frozen=True)
class Instrument:
    name: str
    program: int  # General MIDI program, 0-based
    low: int  # playable MIDI note range
    high: int
    sustained: bool  # bowed or blown: gets expression swells and vibrato
    chords: bool  # plays chords in the "chords" texture
    weight: float  # how often it leads a phrase


INSTRUMENTS = (
    Instrument("string-ensemble", 48, 40, 88, True, True, 3.0),
    Instrument("slow-strings", 49, 40, 88, True, True, 2.0),
    Instrument("violin", 40, 55, 96, True, False, 3.0),
    Instrument("viola", 41, 48, 84, True, False, 2.0),
    Instrument("cello", 42, 36, 72, True, False, 2.5),
    Instrument("contrabass", 43, 28, 55, True, False, 1.0),
    Instrument("tremolo-strings", 44, 40, 84, True, True, 0.7),
    Instrument("pizzicato", 45, 36, 84, False, True, 0.7),
    Instrument("harp", 46, 36, 91, False, True, 0.6),
    Instrument("piano", 0, 36, 96, False, True, 1.2),
    Instrument("flute", 73, 60, 96, True, False, 0.8),
    Instrument("clarinet", 71, 50, 89, True, False, 0.8),
    Instrument("oboe", 68, 58, 91, True, False, 0.6),
)
# more General MIDI programs of FluidR3 for the `varied` recipe
EXTRA_INSTRUMENTS = (
    Instrument("trumpet", 56, 55, 82, True, False, 1.0),
    Instrument("trombone", 57, 40, 72, True, False, 0.8),
    Instrument("french-horn", 60, 41, 77, True, False, 0.8),
    Instrument("tuba", 58, 28, 58, True, False, 0.4),
    Instrument("brass-section", 61, 40, 80, True, True, 0.6),
    Instrument("alto-sax", 65, 49, 81, True, False, 0.8),
    Instrument("tenor-sax", 66, 44, 75, True, False, 0.6),
    Instrument("bassoon", 70, 34, 72, True, False, 0.6),
    Instrument("english-horn", 69, 52, 81, True, False, 0.4),
    Instrument("recorder", 74, 60, 96, True, False, 0.4),
    Instrument("pan-flute", 75, 60, 96, True, False, 0.4),
    Instrument("church-organ", 19, 36, 96, True, True, 0.7),
    Instrument("accordion", 21, 41, 89, True, True, 0.5),
    Instrument("harmonica", 22, 60, 84, True, False, 0.3),
    Instrument("nylon-guitar", 24, 40, 84, False, True, 0.9),
    Instrument("steel-guitar", 25, 40, 84, False, True, 0.7),
    Instrument("clean-guitar", 27, 40, 86, False, True, 0.5),
    Instrument("electric-piano", 4, 36, 96, False, True, 0.6),
    Instrument("harpsichord", 6, 36, 89, False, True, 0.4),
    Instrument("vibraphone", 11, 53, 89, False, True, 0.5),
    Instrument("marimba", 12, 45, 96, False, True, 0.5),
    Instrument("music-box", 10, 60, 96, False, True, 0.3),
    Instrument("kalimba", 108, 60, 91, False, False, 0.3),
    Instrument("choir-aahs", 52, 48, 79, True, True, 0.8),
    Instrument("voice-oohs", 53, 48, 79, True, True, 0.5),
    Instrument("synth-strings", 50, 40, 88, True, True, 0.5),
    Instrument("fiddle", 110, 55, 96, True, False, 0.5),
    Instrument("acoustic-bass", 32, 28, 55, False, False, 0.5),
    Instrument("fingered-bass", 33, 28, 55, False, False, 0.4),
    Instrument("sitar", 104, 48, 84, False, False, 0.3),
    Instrument("square-lead", 80, 48, 96, True, False, 0.3),
    Instrument("warm-pad", 89, 40, 84, True, True, 0.3),
)
BASS_PROGRAMS = (42, 43, 0, 32, 33, 58)
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic-minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
}
TPB = 480  # MIDI ticks per beat


def _scale_notes(root: int, steps: tuple[int, ...], low: int, high: int) -> np.ndarray:
    return np.array([n for n in range(low, high + 1) if (n - root) % 12 in steps])


def phrase_midi(rng: np.random.Generator, instruments: tuple[Instrument, ...] = INSTRUMENTS,
                solo: bool = False) -> tuple[mido.MidiFile, str]:
    """One seeded musical phrase (8-16 s) as a type-0 MIDI file, and a short description.
    ``solo``: the melody alone, one note at a time (what an f0 tracker can follow)."""
    weights = np.array([i.weight for i in instruments])
    lead = instruments[rng.choice(len(instruments), p=weights / weights.sum())]
    basses = tuple(i for i in instruments if i.program in BASS_PROGRAMS)
    textures = ["melody"] if solo else ["melody", "duet"] + (["chords", "chords"] if lead.chords else [])
    texture = str(rng.choice(textures))
    bpm = float(rng.uniform(60, 132))
    beat_s = 60.0 / bpm
    root = int(rng.integers(0, 12))
    mode = str(rng.choice(list(SCALES)))
    steps = SCALES[mode]
    target_beats = rng.uniform(8, 16) / beat_s

    events: list[tuple[int, int, mido.Message]] = []  # (tick, order: offs before ons, message)

    def note(ch: int, n: int, start: float, dur: float, vel: int) -> None:
        on, off = round(start * TPB), round((start + dur) * TPB)
        events.append((on, 1, mido.Message("note_on", channel=ch, note=int(n), velocity=int(np.clip(vel, 20, 127)))))
        events.append((max(off, on + 1), 0, mido.Message("note_off", channel=ch, note=int(n), velocity=0)))

    def cc(ch: int, control: int, value: float, at: float) -> None:
        msg = mido.Message("control_change", channel=ch, control=control, value=int(np.clip(value, 0, 127)))
        events.append((round(at * TPB), 0, msg))

    # a dynamic contour over the phrase: base level, one or two swells
    base, depth, swells = rng.uniform(55, 95), rng.uniform(10, 30), rng.uniform(0.5, 2.0)

    def level(b: float) -> float:
        return base + depth * math.sin(math.pi * swells * b / target_beats) + rng.normal(0, 5)

    # melody: a random walk on the scale, in the middle of the lead's range
    lo, hi = lead.low, lead.high
    if texture == "chords":
        lo = (lead.low + lead.high) // 2 - 2  # chords sit below the tune
    scale = _scale_notes(root, steps, lo, hi)
    idx = int(rng.integers(len(scale) // 4, 3 * len(scale) // 4 + 1))
    durations = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 0.25]) if lead.sustained else np.array([0.25, 0.5, 0.5, 1.0, 1.5, 2.0])
    legato = rng.uniform(0.85, 1.0) if lead.sustained else rng.uniform(0.5, 0.95)
    t = 0.0
    events.append((0, 0, mido.Message("program_change", channel=0, program=lead.program)))
    if lead.sustained:
        cc(0, 1, rng.uniform(0, 50), 0.0)  # modulation wheel: vibrato depth
    while t < target_beats:
        dur = float(rng.choice(durations))
        if rng.random() < 0.1:  # a rest
            t += dur
            continue
        step = int(rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3, 4, -4]))
        idx = int(np.clip(idx + step, 0, len(scale) - 1))
        vel = level(t)
        note(0, scale[idx], t, dur * legato, vel)
        if lead.sustained:  # a swell on each note through the expression controller
            for k, frac in enumerate(np.linspace(0.0, 1.0, 5)):
                shape = math.sin(math.pi * frac) if k < 4 else 0.6
                cc(0, 11, 70 + 57 * shape * rng.uniform(0.5, 1.0), t + frac * dur * 0.95)
        t += dur

    # harmony: a chord progression under the tune, or a bass line on a second instrument
    if texture in ("chords", "duet"):
        degrees = [0, 3, 4, 5, 1, 2]
        chord_beats = float(rng.choice([2.0, 4.0]))
        ch = 0 if texture == "chords" else 1
        bass = lead if texture == "chords" else basses[int(rng.integers(len(basses)))]
        if ch == 1:
            events.append((0, 0, mido.Message("program_change", channel=1, program=bass.program)))
        low_scale = _scale_notes(root, steps, bass.low, min(bass.high, bass.low + 24))
        b = 0.0
        while b < t:
            deg = int(rng.choice(degrees))
            chord = [low_scale[min(len(low_scale) - 1, deg + k)] for k in ((0, 2, 4) if texture == "chords" else (0,))]
            vel = level(b) - 10
            if texture == "chords" and not lead.sustained and rng.random() < 0.5:  # arpeggio
                for k, n in enumerate(chord * 2):
                    note(ch, n, b + k * chord_beats / 6, chord_beats / 6 * 1.5, vel)
            else:
                for n in chord:
                    note(ch, n, b, chord_beats * 0.97, vel)
            b += chord_beats

    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    now = 0
    for tick, _order, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=round(2.0 / beat_s * TPB)))  # room for release tails
    midi = mido.MidiFile(type=0, ticks_per_beat=TPB)
    midi.tracks.append(track)
    return midi, f"{lead.name} {texture} in {mode} at {bpm:.0f} bpm"


def render_strings(rng: np.random.Generator, sample_rate: int, tools: Tools, tmp: Path,
                   recipe: Recipe | None = None) -> np.ndarray:
    recipe = recipe or RECIPES["default"]
    midi, _desc = phrase_midi(rng, recipe.instruments, solo=recipe.solo)
    mid, wav = tmp / "phrase.mid", tmp / "phrase.wav"
    midi.save(mid)
    _run(
        [tools.fluidsynth, "-ni", "-q", "-r", str(sample_rate), "-F", str(wav), "-T", "wav", "-O", "float",
         str(tools.soundfont), str(mid)],
        "fluidsynth",
    )
    return _read_rendered(wav, sample_rate, "fluidsynth")


# ------------------------------------------------------------------------- speech

SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The old lighthouse keeper climbed the stairs every evening at dusk.",
        "Could you pass me the blue notebook on the second shelf?",
        "Rain had been falling since morning, and the river was rising fast.",
        "Seven hundred and forty two people came to the concert last night.",
        "She tuned the cello slowly, listening to each string in turn.",
        "Nobody expected the small bakery on the corner to win the prize.",
        "Please remember to close the window before you leave the studio.",
        "The train to the coast departs from platform nine at a quarter past four.",
        "Why does the sound change when you cup your hands around your mouth?",
        "A thin layer of frost covered the fields until the sun came up.",
        "He whistled a tune that nobody in the village had ever heard before.",
        "The museum will stay open late on Thursdays during the summer.",
        "I think we should try the experiment again with a quieter microphone.",
        "Bright yellow kites drifted above the beach in the afternoon wind.",
        "Every machine in the workshop hummed at a slightly different pitch.",
        "What a wonderful surprise to see you here after all these years!",
        "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
        "Our neighbours keep three goats, a donkey and a very loud rooster.",
        "Turn left at the fountain, then walk straight on for about five minutes.",
        "The orchestra paused, and for a moment the whole hall was silent.",
        "Listening carefully, she could hear the distant rumble of thunder.",
        "Fresh bread, warm soup and good company make the best kind of evening.",
        "The engineer measured the delay in milliseconds and wrote it down.",
        "Is it true that owls can turn their heads almost all the way around?",
        "The children laughed as the puppet fell over for the third time.",
        "A gentle breeze carried the smell of pine trees down the valley.",
        "Thirty one days hath October, and the leaves are turning gold.",
        "He opened the letter, read it twice, and then began to smile.",
        "The library smelled of dust, old paper and polished wood.",
        "Let us meet at noon by the clock tower in the market square.",
        "Somewhere across the water, a foghorn sounded once, then again.",
        "My grandmother sang the same lullaby to all eleven of her grandchildren.",
        "The violinist bowed deeply as the audience rose to its feet.",
        "We counted the stars until the clouds rolled in from the west.",
        "This sentence is spoken by a machine, yet it still has a rhythm.",
        "Quietly, carefully, the cat crept along the top of the garden wall.",
    ),
    "fr": (
        "Le vieux pont de pierre traverse la rivière depuis trois siècles.",
        "Pourriez-vous me dire à quelle heure ouvre la bibliothèque?",
        "Il pleuvait doucement sur les toits de la ville endormie.",
        "Nous avons écouté le quatuor à cordes jusqu'à minuit.",
        "Le boulanger prépare le pain bien avant le lever du soleil.",
        "Quelle belle surprise de vous revoir ici après tant d'années!",
    ),
    "de": (
        "Der Zug nach Hamburg fährt heute mit zehn Minuten Verspätung ab.",
        "Im Garten blühen die ersten Rosen, und die Bienen summen leise.",
        "Kannst du mir bitte sagen, wo der nächste Bahnhof ist?",
        "Das Orchester spielte die Symphonie mit großer Leidenschaft.",
        "Am Wochenende wandern wir gern durch die Wälder und Berge.",
        "Die alte Uhr im Flur schlägt jede Stunde zweimal.",
    ),
    "es": (
        "El mercado abre todos los días a las ocho de la mañana.",
        "¿Sabes si el museo está abierto los domingos por la tarde?",
        "Las olas rompían suavemente contra las rocas de la playa.",
        "Mi abuelo tocaba la guitarra en las fiestas del pueblo.",
        "Mañana vamos a cocinar una paella con nuestros amigos.",
        "El violín sonaba triste en la plaza vacía.",
    ),
    "it": (
        "La piazza era piena di gente che ascoltava la banda suonare.",
        "Domani mattina partiamo presto per andare al mare.",
        "Il violoncello ha una voce calda e profonda.",
        "Scusi, sa dirmi dove si trova la stazione centrale?",
        "In autunno le colline si colorano di rosso e d'oro.",
        "Abbiamo mangiato una pizza buonissima vicino al porto.",
    ),
}
# espeak-ng voices per language, and the variants that still sound like a person
ESPEAK_VOICES = {
    "en": ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"),
    "fr": ("fr-fr", "fr-be"),
    "de": ("de",),
    "es": ("es",),
    "it": ("it",),
}
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Alex", "Andy", "Annie", "Denis", "Diogo",
    "edward", "linda", "steph", "max", "michel", "quincy", "rob", "paul", "david", "aunty", "Lee",
)
LANGUAGE_WEIGHTS = {"en": 0.6, "fr": 0.1, "de": 0.1, "es": 0.1, "it": 0.1}
FLITE_VOICES = ("slt", "rms", "awb", "kal16")  # not "kal": it speaks at 8 kHz


def speech_text(rng: np.random.Generator, lang: str) -> str:
    pool = SENTENCES[lang]
    n = int(rng.integers(2, 5))
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return " ".join(pool[int(i)] for i in picks)


def render_speech(rng: np.random.Generator, sample_rate: int, tools: Tools, tmp: Path,
                  recipe: Recipe | None = None) -> np.ndarray:
    recipe = recipe or RECIPES["default"]
    wav = tmp / "speech.wav"
    kind, program = tools.speech
    if kind == "espeak-ng":
        langs = list(LANGUAGE_WEIGHTS)
        lang = str(rng.choice(langs, p=np.array([LANGUAGE_WEIGHTS[k] for k in langs])))
        voice = str(rng.choice(ESPEAK_VOICES[lang])) + "+" + str(rng.choice(ESPEAK_VARIANTS))
        speed, pitch = int(rng.integers(*recipe.speech_speed)), int(rng.integers(*recipe.speech_pitch))
        gap = int(rng.integers(0, 4))
        text = speech_text(rng, lang)
        cmd = [program, "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap), "-w", str(wav), text]
    else:  # flite: English only, its built-in voices
        voice = str(rng.choice(FLITE_VOICES))
        stretch = float(rng.uniform(0.8, 1.25) * 160 / np.mean(recipe.speech_speed))
        text = speech_text(rng, "en")
        cmd = [program, "-voice", voice, "--setf", f"duration_stretch={stretch:.2f}", "-t", text, "-o", str(wav)]
    _run(cmd, kind)
    return _read_rendered(wav, sample_rate, kind)


# ----------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Recipe:
    name: str
    instruments: tuple[Instrument, ...]
    speech_pitch: tuple[int, int]  # espeak-ng -p range (0-99), upper bound exclusive
    speech_speed: tuple[int, int]  # espeak-ng -s range, words per minute
    minutes: float  # default length
    tag: str  # file-name tag, so recipes can share a folder
    domains: tuple[str, ...] = DOMAINS  # what it renders, the minutes shared among them
    solo: bool = False  # melodies alone, one note at a time


# the bowed strings that play a melody alone: monophonic, for the f0 comparison of `wavae evaluate`
SOLO_STRINGS = tuple(i for i in INSTRUMENTS if i.name in ("violin", "viola", "cello"))

RECIPES = {
    "default": Recipe("default", INSTRUMENTS, (20, 80), (120, 200), 6.0, ""),
    "varied": Recipe("varied", INSTRUMENTS + EXTRA_INSTRUMENTS, (5, 96), (100, 230), 24.0, "varied-"),
    "solo": Recipe("solo", SOLO_STRINGS, (20, 80), (120, 200), 2.0, "solo-", domains=("strings",), solo=True),
}

Renderer = Callable[[np.random.Generator, int, Tools, Path, Recipe], np.ndarray]
RENDERERS: dict[str, Renderer] = {"strings": render_strings, "speech": render_speech}


def _read_rendered(path: Path, sample_rate: int, what: str) -> np.ndarray:
    """A rendered file as mono at the rate, silence trimmed and peak-normalised."""
    try:
        x = load_audio(path, sample_rate)
    except AudioError as e:
        raise DataError(f"{what} wrote no usable audio: {e}") from e
    peak = float(np.abs(x).max())
    if peak <= 1e-6:
        raise DataError(f"{what} rendered silence into {path}")
    loud = np.flatnonzero(np.abs(x) > peak * 1e-3)  # -60 dB below the peak
    start = max(0, loud[0] - round(0.05 * sample_rate))
    stop = min(len(x), loud[-1] + round(0.3 * sample_rate))
    return (x[start:stop] * (PEAK / peak)).astype(np.float32)


def _existing_seconds(path: Path, sample_rate: int) -> float | None:
    """Duration of a complete earlier file at this rate, or None when it must be (re)made."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError):
        return None
    if info.samplerate != sample_rate or info.channels != 1 or info.frames <= 0:
        return None
    return info.frames / sample_rate


def _write_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    with atomic_path(path) as tmp:
        sf.write(tmp, x, sample_rate, subtype="PCM_16", format="WAV")


def build_corpus(
    out: str | os.PathLike,
    minutes: float | None = None,
    sample_rate: int = 24000,
    seed: int = 0,
    soundfont: str | os.PathLike | None = None,
    progress: bool = True,
    recipe: str = "default",
) -> dict:
    """Render about ``minutes`` (default: the recipe's) of audio, half strings and half
    speech, into ``out``.

    Returns ``{"out", "sample_rate", "seed", "strings": {...}, "speech": {...}}``
    where each domain has ``files`` (this recipe's files), ``rendered`` (made by
    this call), ``existing`` (already there, skipped), ``seconds`` and ``other_files``
    (wav files in the folder that this recipe did not plan: another seed, a larger
    earlier ``--minutes``; they are part of the corpus too).
    """
    if recipe not in RECIPES:
        raise DataError(f"unknown corpus recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    rec = RECIPES[recipe]
    minutes = rec.minutes if minutes is None else minutes
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise DataError(f"--minutes must be a positive number, got {minutes}")
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise DataError(f"--sample-rate must be between {MIN_RATE} and {MAX_RATE} Hz (fluidsynth's range), got {sample_rate}")
    tools = find_tools(soundfont)
    out = Path(out)
    summary: dict = {"out": str(out), "sample_rate": sample_rate, "seed": seed, "recipe": recipe}
    for domain in rec.domains:
        d = DOMAINS.index(domain)  # the seed of a domain's files does not depend on the recipe's domains
        folder = out / domain
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create {folder}: {e}") from e
        target = minutes * 60.0 / len(rec.domains)
        render = RENDERERS[domain]
        done, rendered, existing, planned = 0.0, 0, 0, set()
        bar = Progress(round(target, 1), domain, "s", enabled=progress)
        with tempfile.TemporaryDirectory(prefix="wavae-corpus-") as tmp:
            i = 0
            while done < target:
                path = folder / f"{domain}-{rec.tag}s{seed}-{i:04d}.wav"
                planned.add(path.name)
                seconds = _existing_seconds(path, sample_rate)
                if seconds is None:
                    x = render(np.random.default_rng([seed, d, i]), sample_rate, tools, Path(tmp), rec)
                    _write_wav(path, x, sample_rate)
                    seconds = len(x) / sample_rate
                    rendered += 1
                else:
                    existing += 1
                bar.update(min(seconds, target - done))
                done += seconds
                i += 1
        bar.close()
        others = [p for p in folder.glob("*.wav") if p.name not in planned]
        summary[domain] = {"files": i, "rendered": rendered, "existing": existing, "seconds": round(done, 3),
                           "other_files": len(others)}
    return summary


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="corpus folder (gets strings/ and speech/)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                        help="default: 13 string, keyboard and wind instruments and 5 languages of speech, 6 "
                             "minutes (CI, make data); varied: 45 General MIDI instruments and wider speech "
                             "pitch and speed, 24 minutes (a model meant to play); solo: violin, viola and cello "
                             "melodies alone, one note at a time, 2 minutes, no speech (the held-out clips for the "
                             "f0 target of `wavae evaluate`)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="total minutes of audio, about half per domain (default: the recipe's)")
    parser.add_argument("--sample-rate", type=int, default=24000, help="sample rate of the files, Hz (default 24000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the phrases and voices (default 0)")
    parser.add_argument("--soundfont", type=Path, default=None,
                        help=f"General MIDI .sf2 (default ${SOUNDFONT_ENV} or {DEFAULT_SOUNDFONT})")


def main(args: argparse.Namespace) -> int:
    summary = build_corpus(args.out, args.minutes, args.sample_rate, args.seed, args.soundfont, recipe=args.recipe)
    total = 0.0
    for domain in RECIPES[args.recipe].domains:
        s = summary[domain]
        total += s["seconds"]
        extra = f"; {s['other_files']} other wav file(s) in the folder" if s["other_files"] else ""
        print(f"{domain:8s} {s['files']:4d} files ({s['rendered']} rendered, {s['existing']} already there), "
              f"{s['seconds'] / 60:.2f} min{extra}")
    print(f"corpus: {summary['out']} ({total / 60:.2f} min at {summary['sample_rate']} Hz)")
    return 0
