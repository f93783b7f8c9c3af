"""The toy image-editing world, under its original name: a re-export of :mod:`rewardedit_lib.toy`.

The world now lives in three modules of the toy package, one idea each: :mod:`rewardedit_lib.toy.world`
(vocabulary, scenes and drawing, the instruction grammar and its parser, random scenes and edits),
:mod:`rewardedit_lib.toy.editors` (the correct and the flawed editor, triplets) and
:mod:`rewardedit_lib.toy.writer` (the training set and the benchmark in the real file formats).

Why this module stays: ``from rewardedit_lib import toyworld`` is how the seven notebooks, the course, the
CLI, the tools, the tests and users' own code reach the world (``toyworld.make_triplet``,
``toyworld.read_truth`` ...). Re-exporting the same public names here keeps every one of them working
unchanged, without rewriting hundreds of call sites in notebooks whose outputs are checked; new code may
import the toy modules directly. Only public names are re-exported: the grammar's private tables are not
(``toy.world.grammar_phrases`` is the public view of them).
"""

from __future__ import annotations

from .formats import EDIT_TYPES
from .toy import editors as _editors, world as _world, writer as _writer
from .toy.editors import *  # noqa: F401,F403
from .toy.world import *  # noqa: F401,F403
from .toy.writer import *  # noqa: F401,F403

__all__ = ["EDIT_TYPES", *_world.__all__, *_editors.__all__, *_writer.__all__]
