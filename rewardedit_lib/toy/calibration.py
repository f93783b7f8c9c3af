"""The toy judge's thresholds (version 3): where a measured difference becomes a finding a viewer would see.

They live apart from the measurements that use them (:mod:`.quality`, :mod:`.explanation`) because they are
one decision, made once: ``tools/calibrate_toy_judge.py`` re-measures the table behind them and
``tests/test_toy_judge.py`` checks each threshold against it.
"""

#: Version 3's calibration rule, fixed before any model was compared: every finding's threshold sits half-way
#: between a clean drawing and the smallest planted flaw of its kind, each measured with the judge's own
#: measure on generated triplets (``tools/calibrate_toy_judge.py`` prints the table; docs/toy-world.md keeps
#: it). So the judge fails what a viewer would call the flaw, not a model's imperceptible imprecision. Version 2
#: failed a background that drifted by 7 grey levels, where the data's own shift is 40 or more.
#: Findings between two drawings (an object recoloured to another palette colour, moved, vanished; a partial,
#: wrong or missing edit) are decided by which drawing the pixels are nearer: the half-way point by construction.
#: Additive noise is a finding from this standard deviation (grey levels): clean 0, planted 21 or more.
NOISE_VISIBLE = 10.5
#: The smallest planted noise (grey levels): a finding this strong scores 0 (:func:`quality_band`).
NOISE_PLANTED = 21.0
#: Blur is graded by the mean 10-90 % rise distance of the image's edges (pixels): 0.8 for a hard-edged
#: drawing, 3.8 or more for the planted defocus (1st percentile). A finding from this width; "slightly blurry" (still a yes)
#: from half-way between a drawing and it.
BLUR_SHARP = 0.8
BLUR_VISIBLE = 2.3
#: The planted defocus's edge width, 1st percentile (pixels): a blur this strong scores 0.
BLUR_PLANTED = 3.8
#: The background's median colour may move by this much in any channel (grey levels) before it "changed":
#: the planted shift is 40 or more as drawn.
BACKGROUND_VISIBLE = 20.0
#: An object's median colour may move by this much in any channel before it "changed": the closest two
#: palette colours differ by 35 as drawn (yellow and orange, darker).
COLOUR_VISIBLE = 17.5
#: Something appeared in an empty cell when its median colour is this far from the background in some
#: channel: the least contrasted object on a background differs by 25 as drawn.
APPEARED_VISIBLE = 12.5


def quality_band(strength: float, visible: float, planted: float) -> int:
    """A quality finding's score from its measured strength (version 3, fixed before any model was compared).

    The 0-5 scale spans the defects the world makes: 4 (still a yes) below the finding threshold ``visible``,
    then 3, 2 and 1 in thirds of the way to ``planted`` -- the smallest defect of its kind the world plants --
    and 0 from there: a defect as strong as the world's own is the worst quality it makes, as "nothing was
    done" is following's 0. Why 0 and not 1 (version 2): a reward scale whose 0 no annotation ever used gives a
    model asking for 0 nothing it has learnt (its score embedding at 0 was never trained).
    """
    if strength < visible:
        return 4
    step = (planted - visible) / 3.0
    return 3 if strength < visible + step else 2 if strength < visible + 2 * step else 1 if strength < planted else 0
