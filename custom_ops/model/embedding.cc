// embedding: out[t] = table[ids[t]], a zero row for an id outside [0, vocab) (padding rows carry -1).
#include "../include/dispatch.h"

#ifdef PADDLE_WITH_CUDA
#include "embedding.h"
#endif

namespace fdo::embedding {

constexpr const char* kEmbedding = "embedding";

std::vector<paddle::Tensor> Embedding(const paddle::Tensor& ids, const paddle::Tensor& table) {
  const char* op = kEmbedding;
  CheckDtype(op, "ids", ids, paddle::DataType::INT64);
  CheckShape(op, "ids", ids, {-1});
  CheckShape(op, "table", table, {-1, -1});
  CheckSamePlace(op, "table", table, "ids", ids);
  const int64_t rows = ids.shape()[0];
  const int64_t vocab = table.shape()[0];
  const int64_t hidden = table.shape()[1];
  paddle::Tensor out = EmptyOutput({rows, hidden}, table.dtype(), table.place());
  const bool on_gpu = RunsOnGpu(op, "ids", ids);
  DispatchFloat(op, "table", table, [&](auto type) {
    using S = typename decltype(type)::type;
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchEmbedding<S>(ids.data<int64_t>(), FloatData<S>(table), rows, vocab, hidden,
                                       FloatData<S>(out), ids.stream()));
#endif
      return;
    }
    const int64_t* id = ids.data<int64_t>();
    const S* src = FloatData<S>(table);
    S* dst = FloatData<S>(out);
    for (int64_t t = 0; t < rows; ++t) {
      const bool valid = id[t] >= 0 && id[t] < vocab;
      for (int64_t h = 0; h < hidden; ++h) dst[t * hidden + h] = valid ? src[id[t] * hidden + h] : S{0};
    }
  });
  return {out};
}

}  // namespace fdo::embedding

PD_BUILD_OP(embedding)
    .Inputs({"ids", "table"})
    .Outputs({"out"})
    .SetKernelFn(PD_KERNEL(fdo::embedding::Embedding));
