"""The three-perspective judge: versioned prompts, the openai client, annotation runs (generic: any judge).

* :mod:`.prompts`    the questions and the parsing of answers (shared by the client and the toy server)
* :mod:`.client`     one AsyncOpenAI-based client: concurrency, retries, cost accounting, the answer cache
* :mod:`.annotate`   annotate a dataset into RewardEdit_20K.json: resumable, never pays twice

The toy judge (the offline stand-in for GPT-4o) and its HTTP server live in :mod:`rewardedit_lib.toy`.
"""
