// sample_greedy: per row the argmax of the logits, ties to the lowest id; banned_token_id (-1: none) is
// never chosen; a NaN logit ranks below every number (so NaN never wins over a number; a row of NaNs
// gives its lowest non-banned id); a row with no candidate at all gives -1.
#include "../include/dispatch.h"
#include "sampling.h"

namespace fdo::sampling {

constexpr const char* kSampleGreedy = "sample_greedy";

std::vector<paddle::Tensor> SampleGreedy(const paddle::Tensor& logits, int64_t banned_token_id) {
  const char* op = kSampleGreedy;
  CheckShape(op, "logits", logits, {-1, -1});
  const int64_t bsz = logits.shape()[0];
  const int64_t vocab = logits.shape()[1];
  paddle::Tensor out = EmptyOutput({bsz, 1}, paddle::DataType::INT64, logits.place());
  const bool on_gpu = RunsOnGpu(op, "logits", logits);
  DispatchFloat(op, "logits", logits, [&](auto type) {
    using S = typename decltype(type)::type;
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchSampleGreedy<S>(FloatData<S>(logits), bsz, vocab, banned_token_id, out.data<int64_t>(),
                                          logits.stream()));
#endif
      return;
    }
    const S* row = FloatData<S>(logits);
    int64_t* dst = out.data<int64_t>();
    for (int64_t b = 0; b < bsz; ++b, row += vocab) {
      Candidate best{-1, 0.0f, INT64_MAX};
      for (int64_t v = 0; v < vocab; ++v) {
        const Candidate c = MakeCandidate(ToFloat(row[v]), v, banned_token_id);
        if (Better(c, best)) best = c;
      }
      dst[b] = best.tier < 0 ? -1 : best.id;
    }
  });
  return {out};
}

}  // namespace fdo::sampling

PD_BUILD_OP(sample_greedy)
    .Inputs({"logits"})
    .Outputs({"sampled_token_ids"})
    .Attrs({"banned_token_id: int64_t"})
    .SetKernelFn(PD_KERNEL(fdo::sampling::SampleGreedy));
