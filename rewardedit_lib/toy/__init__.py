"""The toy world's stand-ins: what lets the kit run, and mean something, without GPUs, data or an API key.

* :mod:`.judge`  the toy judge, the offline stand-in for GPT-4o: scores toy-world edits from pixels and words
  alone (its steps: :mod:`.quality`, :mod:`.scene_recovery`, :mod:`.explanation` with :mod:`.comparator`,
  :mod:`.feedback`, :mod:`.calibration`, :mod:`.pixels`)
* :mod:`.server`  the toy judge behind an OpenAI-compatible HTTP API (``rewardedit judge-server``)

The generic judge code (:mod:`rewardedit_lib.judge`) imports nothing from here.
"""
