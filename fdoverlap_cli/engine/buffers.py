"""FastDeploy's `share_inputs`: the persistent per-slot buffers of the model runner, sized from a trace."""

from __future__ import annotations

from typing import Any

import numpy as np

from fdoverlap_cli.trace import TraceConfig


class ShareInputs:
    """Device buffers the step ops read and write in place, and the host buffers the copies land in.

    Device: input_ids, pre_ids, seq_lens_this_time/encoder/decoder, prompt_lens, step_idx, max_dec_len,
    stop_flags, not_need_stop_device, next_tokens, end_ids, the KV cache.
    Host: sampled_token_ids, not_need_stop_staged and seq_lens_this_time_host (pinned on a GPU: the async
    copies' targets), running_flag (the develop runner's constant message sign),
    not_need_stop (the host flag, read and written only through get_stop/set_stop), preempted_idx and
    last_preempted_idx (numpy: the host writes them at insert time).
    """

    def __init__(self, device: Any, ops: Any, trace_config: TraceConfig, kv_cache: list[tuple[Any, Any]]) -> None:
        self.device = device
        self.ops = ops
        self.max_num_seqs = bsz = trace_config.max_num_seqs
        self.max_model_len = trace_config.max_model_len
        self.max_input_len = min(trace_config.max_num_batched_tokens, trace_config.max_model_len)
        self.eos_token_id = trace_config.eos_token_id

        self.input_ids = device.empty([bsz, self.max_input_len], "int64")
        self.pre_ids = device.empty([bsz, self.max_model_len], "int64")
        self.seq_lens_this_time = device.empty([bsz], "int32")
        self.seq_lens_encoder = device.empty([bsz], "int32")
        self.seq_lens_decoder = device.empty([bsz], "int32")
        self.prompt_lens = device.empty([bsz], "int64")
        self.step_idx = device.empty([bsz], "int64")
        self.max_dec_len = device.empty([bsz], "int64")
        self.stop_flags = device.empty([bsz], "bool")
        self.not_need_stop_device = device.empty([1], "bool")
        self.next_tokens = device.empty([bsz, 1], "int64")
        self.idle_tokens = device.empty([bsz, 1], "int64")  # sampler output of a step with no tokens
        self.end_ids = device.to_device(np.array([self.eos_token_id], dtype=np.int64))
        self.kv_cache = kv_cache

        self.sampled_token_ids = device.host_buffer([bsz, 1], "int64")
        self.not_need_stop_staged = device.host_buffer([1], "bool")
        self.not_need_stop = device.host_tensor(np.zeros([1], dtype=bool))
        # The develop runner: seq_lens_this_time copied at each launch (its token_num_event predicts the next
        # launch's count from it), and the sign its messages carry (no not_need_stop: always +msg_id).
        self.seq_lens_this_time_host = device.host_buffer([bsz], "int32")
        self.running_flag = device.host_tensor(np.ones([1], dtype=bool))
        self.preempted_idx = np.zeros(bsz, dtype=np.int32)
        self.last_preempted_idx = np.zeros(bsz, dtype=np.int32)
        self.preempted_for_save = device.host_tensor(self.preempted_idx)  # what save_output reads
        self.reset()

    def reset(self) -> None:
        """Every slot idle and stopped, as after start-up (the KV cache is written before it is read)."""
        fill = self.ops.fill_
        for t in (self.input_ids, self.pre_ids, self.seq_lens_this_time, self.seq_lens_encoder):
            fill(t, 0)
        for t in (self.seq_lens_decoder, self.prompt_lens, self.step_idx, self.max_dec_len):
            fill(t, 0)
        fill(self.stop_flags, 1)
        fill(self.not_need_stop_device, 0)
        fill(self.next_tokens, -1)
        fill(self.idle_tokens, -1)
        self.ops.set_stop(self.not_need_stop, False)
        self.preempted_idx[:] = 0
        self.last_preempted_idx[:] = 0
