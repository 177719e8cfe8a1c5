// save_output / get_output: the step's tokens as one SysV message to the output reader, as FastDeploy's
// save_output does (CPU only; the queue's life cycle belongs to fdoverlap_cli/engine/msg_queue.py).
//
// Message (mtype 1, int32): [+msg_id if not_need_stop else -msg_id, bsz, token_0 .. token_{bsz-1}],
// a token being -9 for a slot whose preempted_idx is 1 (preempted at this step; any other value is not
// a marker, as in FastDeploy). [0, 0] marks the end of a run. msg_id must be positive (its sign carries
// not_need_stop) and not 2: FastDeploy's reader takes a leading -2 for "no message" and refuses it.
//   save_output status: 0 sent, 1 queue full (the caller retries: back-pressure, never a lost message),
//                       -errno otherwise.
//   get_output status:  > 0 the message length in int32 (copied to out), 0 none waiting (block=false),
//                       -errno otherwise (-EIDRM/-EINVAL: the queue is gone, -EINTR: a signal, -E2BIG:
//                       out is too small; the message stays queued).
#include <sys/ipc.h>
#include <sys/msg.h>

#include <cerrno>
#include <cstring>

#include "../include/checks.h"

namespace fdo::ipc {

constexpr const char* kSaveOutput = "save_output";
constexpr const char* kGetOutput = "get_output";
constexpr long kMessageType = 1;
constexpr int32_t kPreemptedToken = -9;
constexpr int32_t kPreemptedFlag = 1;  // the preempted_idx value that marks a slot
constexpr int kReservedMsgId = 2;  // -2 leads FastDeploy's "no message" answer of get_output

// A SysV message buffer: the mtype, then `words` int32 of text, long-aligned.
class MessageBuffer {
 public:
  explicit MessageBuffer(int64_t words) : storage_(1 + (words * sizeof(int32_t) + sizeof(long) - 1) / sizeof(long)) {}
  void* raw() { return storage_.data(); }
  long& type() { return storage_[0]; }
  int32_t* text() { return reinterpret_cast<int32_t*>(storage_.data() + 1); }

 private:
  std::vector<long> storage_;
};

paddle::Tensor Status(int32_t value) {
  paddle::Tensor status = paddle::empty({1}, paddle::DataType::INT32, paddle::CPUPlace());
  status.data<int32_t>()[0] = value;
  return status;
}

std::vector<paddle::Tensor> SaveOutput(const paddle::Tensor& sampled_token_ids, const paddle::Tensor& not_need_stop,
                                       const paddle::Tensor& preempted_idx, int msqid, int msg_id) {
  const char* op = kSaveOutput;
  CheckDtype(op, "sampled_token_ids", sampled_token_ids, paddle::DataType::INT64);
  CheckShape(op, "sampled_token_ids", sampled_token_ids, {-1, 1});
  CheckHostAccessible(op, "sampled_token_ids", sampled_token_ids);
  const int64_t bsz = sampled_token_ids.shape()[0];
  CheckDtype(op, "not_need_stop", not_need_stop, paddle::DataType::BOOL);
  CheckNumel(op, "not_need_stop", not_need_stop, 1);
  CheckHostAccessible(op, "not_need_stop", not_need_stop);
  CheckDtype(op, "preempted_idx", preempted_idx, paddle::DataType::INT32);
  CheckShape(op, "preempted_idx", preempted_idx, {bsz});
  CheckHostAccessible(op, "preempted_idx", preempted_idx);
  PD_CHECK(msg_id > 0, op, ": attribute 'msg_id' must be positive (its sign carries not_need_stop), got ", msg_id);
  PD_CHECK(msg_id != kReservedMsgId, op, ": attribute 'msg_id' must not be ", kReservedMsgId, " (a leading -",
           kReservedMsgId, " means 'no message' to FastDeploy's output reader)");

  MessageBuffer message(2 + bsz);
  message.type() = kMessageType;
  int32_t* text = message.text();
  text[0] = not_need_stop.data<bool>()[0] ? msg_id : -msg_id;
  text[1] = static_cast<int32_t>(bsz);
  const int64_t* tokens = sampled_token_ids.data<int64_t>();
  const int32_t* preempted = preempted_idx.data<int32_t>();
  for (int64_t b = 0; b < bsz; ++b) {
    text[2 + b] = preempted[b] == kPreemptedFlag ? kPreemptedToken : static_cast<int32_t>(tokens[b]);
  }
  const size_t bytes = static_cast<size_t>(2 + bsz) * sizeof(int32_t);
  if (msgsnd(msqid, message.raw(), bytes, IPC_NOWAIT) == 0) return {Status(0)};
  return {Status(errno == EAGAIN ? 1 : -errno)};
}

// `out` is written through its pointer (a host buffer the caller reuses), so that the op's one output is
// the status, as FastDeploy's get_output writes its buffer.
std::vector<paddle::Tensor> GetOutput(const paddle::Tensor& out, int msqid, bool block) {
  const char* op = kGetOutput;
  CheckDtype(op, "out", out, paddle::DataType::INT32);
  CheckShape(op, "out", out, {-1});
  CheckHostAccessible(op, "out", out);
  const int64_t capacity = out.numel();
  MessageBuffer message(capacity);
  const ssize_t received = msgrcv(msqid, message.raw(), static_cast<size_t>(capacity) * sizeof(int32_t), 0,
                                  block ? 0 : IPC_NOWAIT);
  if (received < 0) return {Status(errno == ENOMSG ? 0 : -errno)};
  const int64_t words = received / static_cast<ssize_t>(sizeof(int32_t));
  std::memcpy(const_cast<int32_t*>(out.data<int32_t>()), message.text(), static_cast<size_t>(words) * sizeof(int32_t));
  return {Status(static_cast<int32_t>(words))};
}

}  // namespace fdo::ipc

PD_BUILD_OP(save_output)
    .Inputs({"sampled_token_ids", "not_need_stop", "preempted_idx"})
    .Outputs({"status"})
    .Attrs({"msqid: int", "msg_id: int"})
    .SetKernelFn(PD_KERNEL(fdo::ipc::SaveOutput));

PD_BUILD_OP(get_output)
    .Inputs({"out"})
    .Outputs({"status"})
    .Attrs({"msqid: int", "block: bool"})
    .SetKernelFn(PD_KERNEL(fdo::ipc::GetOutput));
