"""The toy world's stand-ins: what lets the kit run, and mean something, without GPUs, data or an API key.

* :mod:`.world`, :mod:`.editors`, :mod:`.writer`  the toy world: scenes and the instruction grammar, the
  correct and the flawed editor, the data and benchmark writers (``rewardedit_lib.toyworld`` re-exports them)
* :mod:`.judge`  the toy judge, the offline stand-in for GPT-4o: scores toy-world edits from pixels and words
  alone (its steps: :mod:`.quality`, :mod:`.scene_recovery`, :mod:`.explanation` with :mod:`.comparator`,
  :mod:`.feedback`, :mod:`.calibration`, :mod:`.pixels`)
* :mod:`.text_encoder`  the toy model's offline tokenizer over the world's words and its tiny CLIP text
  encoder (the generic encode function stays in :mod:`rewardedit_lib.text`)
* :mod:`.server`  the toy judge behind an OpenAI-compatible HTTP API (``rewardedit judge-server``)
* :mod:`.endpoint`  "no judge URL given" means the local toy judge: the one helper annotation and evaluation
  use (it also gives the toy judge's version to the answer cache)

The generic judge code (:mod:`rewardedit_lib.judge`) imports nothing from here.
"""
