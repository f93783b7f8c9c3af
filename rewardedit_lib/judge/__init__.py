"""The three-perspective judge: versioned prompts, the openai client, annotation runs, and the toy judge.

* :mod:`.prompts`    the questions and the parsing of answers (shared by the client and the toy server)
* :mod:`.client`     one AsyncOpenAI-based client: concurrency, retries, cost accounting, the answer cache
* :mod:`.annotate`   annotate a dataset into RewardEdit_20K.json: resumable, never pays twice
* :mod:`.toy_judge`  the offline stand-in for GPT-4o: scores toy-world edits from pixels and words alone
* :mod:`.server`     the toy judge behind an OpenAI-compatible HTTP API, with fault injection
"""
