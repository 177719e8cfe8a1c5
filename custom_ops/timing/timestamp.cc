// record_timestamp: write a timestamp into buf[index] when the stream reaches this point.
//   GPU: a one-thread kernel on `stream` (0: the buffer's stream) writes %globaltimer (ns).
//   CPU: CLOCK_MONOTONIC (ns) now.
// clock_samples: rows (host_before, device_time, host_after) in a CPU int64[samples, 3] tensor, host
// times CLOCK_MONOTONIC, for aligning the GPU clock to the host clock. On the CPU, device_time is
// the host clock itself.
#include "../include/dispatch.h"
#include "../include/host_clock.h"

#ifdef PADDLE_WITH_CUDA
#include "timestamp.h"
#endif

namespace fdo::timing {

constexpr const char* kRecordTimestamp = "record_timestamp";
constexpr const char* kClockSamples = "clock_samples";
constexpr double kClockSamplesTimeoutSeconds = 10.0;

void RecordTimestamp(paddle::Tensor& buf, int64_t index, [[maybe_unused]] int64_t stream) {
  const char* op = kRecordTimestamp;
  CheckDtype(op, "buf", buf, paddle::DataType::INT64);
  CheckShape(op, "buf", buf, {-1});
  PD_CHECK(index >= 0 && index < buf.numel(), op, ": index ", index, " is outside buf [0, ", buf.numel(), ")");
  if (RunsOnGpu(op, "buf", buf)) {
#ifdef PADDLE_WITH_CUDA
    cudaStream_t s = stream != 0 ? reinterpret_cast<cudaStream_t>(stream) : buf.stream();
    CheckCuda(op, LaunchRecordTimestamp(buf.data<int64_t>() + index, s));
#endif
    return;
  }
  buf.data<int64_t>()[index] = MonotonicNs();
}

std::vector<paddle::Tensor> ClockSamples(const paddle::Tensor& probe, int samples) {
  const char* op = kClockSamples;
  CheckPositive(op, "samples", samples);
  paddle::Tensor rows = paddle::empty({samples, 3}, paddle::DataType::INT64, paddle::CPUPlace());
  int64_t* row = rows.data<int64_t>();
  if (RunsOnGpu(op, "probe", probe)) {
#ifdef PADDLE_WITH_CUDA
    bool timed_out = false;
    CheckCuda(op, ClockSamplesCuda(samples, kClockSamplesTimeoutSeconds, row, &timed_out));
    PD_CHECK(!timed_out, op, ": the GPU did not answer within ", kClockSamplesTimeoutSeconds, " s");
#endif
    return {rows};
  }
  for (int i = 0; i < samples; ++i) {
    row[3 * i] = MonotonicNs();
    row[3 * i + 1] = MonotonicNs();
    row[3 * i + 2] = MonotonicNs();
  }
  return {rows};
}

}  // namespace fdo::timing

PD_BUILD_OP(record_timestamp)
    .Inputs({"buf"})
    .Outputs({"buf_out"})
    .Attrs({"index: int64_t", "stream: int64_t"})
    .SetInplaceMap({{"buf", "buf_out"}})
    .SetKernelFn(PD_KERNEL(fdo::timing::RecordTimestamp));

PD_BUILD_OP(clock_samples)
    .Inputs({"probe"})
    .Outputs({"rows"})
    .Attrs({"samples: int"})
    .SetKernelFn(PD_KERNEL(fdo::timing::ClockSamples));
