"""Rollout engines behind one protocol (:class:`rlvr.rollout.base.RolloutEngine`): HF generate, vLLM."""
