"""`taseg bag select`: choose the K frames of one or more recordings most worth labelling.

Method (deterministic: the same recordings, model and options choose the same frames):
1. Score. Every pair (or every N-th / at most F per second with --every / --hz) runs through the
   model as the node runs it: thermal prepared by the frame layer's ``ThermalPreparation`` with the
   given --thermal-* settings (what the loader will do with the extracted files), then
   ``Segmenter.predict_prepared``. Its uncertainty (``labelling.uncertainty``) is the mean
   normalised entropy of the softmax (0 certain .. 1 uniform), or with ``--score low-confidence``
   the share of pixels whose chosen class has probability below --low-confidence.
2. Describe. A 16x12 thumbnail of the grey RGB frame and one of the prepared thermal frame
   (area-averaged, values 0..1); the distance of two frames is the RMS difference of their
   thumbnails (0: identical, 1: black vs white everywhere).
3. Choose, greedily: first the most uncertain frame; then, again and again, the frame with the
   largest uncertainty x distance to its nearest already chosen frame. A frame is never chosen
   when it lies within --min-gap seconds of a chosen frame of the same recording, or closer than
   --min-distance to any chosen frame (a near-duplicate: the robot standing still, a repeated
   view). Ties go to the earlier frame (recordings in the order given, then by stamp). Selection
   stops at K, or earlier when no frame qualifies any more (the result says so). Frames already in
   the output folder (an earlier round) count as chosen: they are not scored again, and frames near
   them in appearance, or in time (same recording, per frames.csv), are held back the same way.
   Scoring runs one recording per task on the engines of ``bag.fleet`` (local worker processes or a
   Ray cluster, each worker loading the model once); the choice itself runs once, over all the
   candidates in recording order, so the engine and the number of workers change nothing (the
   workers' CPU threads are fixed: --threads-per-worker).
4. Write. The chosen pairs are written exactly as ``taseg bag extract`` writes them (rgb/, raw
   thermal/, classes.yaml with the model's class list and the thermal preparation, train.txt,
   val.txt, frames.csv; ``bag.extract`` with the chosen stamps), plus ``selection.csv``: id,
   recording, rgb_stamp_ns, uncertainty (the --score figure), entropy, low_confidence, rank
   (1 = chosen first). Adds to an existing dataset folder; a failed run removes what it added.
"""
# This module is what `taseg bag select --help` shows (its docstring) and the defaults its options
# state: standard library only, so building the command line loads neither the model nor OpenCV.
from __future__ import annotations

from taseg_ros.evaluation.figures import DEFAULT_LOW_CONFIDENCE

SCORES = ("entropy", "low-confidence")  # the --score figures (labelling.uncertainty)
DEFAULT_SCORE = "entropy"
DEFAULT_MIN_GAP_S = 1.0
DEFAULT_MIN_DISTANCE = 0.02

__all__ = ["DEFAULT_LOW_CONFIDENCE", "DEFAULT_MIN_DISTANCE", "DEFAULT_MIN_GAP_S", "DEFAULT_SCORE", "SCORES"]
