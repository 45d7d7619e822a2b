"""Multi-turn tasks shipped with tokengym: their responders, reward models and prompt makers.

- :mod:`.calculator`: ``tokengym/Calculator-v0``, multi-step arithmetic with a calculator tool.
- :mod:`.guess_number`: ``tokengym/GuessNumber-v0``, higher/lower feedback, solve within k turns.
- :mod:`.support`: ``tokengym/Support-v0``, calm a customer simulated by a language model
  (:mod:`.lm_responder`).

Their prompt files live in ``envs/data`` (``scripts/make_multiturn_data.py`` writes them).
"""
