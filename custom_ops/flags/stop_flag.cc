// get_stop / set_stop: read and write a bool[1] flag through its host pointer.
//
// The host's copy of not_need_stop lives in pinned memory on a GPU; a paddle op on a pinned tensor
// would turn it into a GPU tensor, so the engine reads and writes the flag with these ops only.
#include "../include/checks.h"

namespace fdo::flags {

constexpr const char* kGetStop = "get_stop";
constexpr const char* kSetStop = "set_stop";

void CheckFlag(const char* op, const paddle::Tensor& flag) {
  CheckDtype(op, "flag", flag, paddle::DataType::BOOL);
  CheckNumel(op, "flag", flag, 1);
  CheckHostAccessible(op, "flag", flag);
}

std::vector<paddle::Tensor> GetStop(const paddle::Tensor& flag) {
  CheckFlag(kGetStop, flag);
  paddle::Tensor out = paddle::empty({1}, paddle::DataType::BOOL, paddle::CPUPlace());
  out.data<bool>()[0] = static_cast<const volatile bool*>(flag.data<bool>())[0];
  return {out};
}

void SetStop(paddle::Tensor& flag, bool value) {
  CheckFlag(kSetStop, flag);
  static_cast<volatile bool*>(flag.data<bool>())[0] = value;
}

}  // namespace fdo::flags

PD_BUILD_OP(get_stop).Inputs({"flag"}).Outputs({"value"}).SetKernelFn(PD_KERNEL(fdo::flags::GetStop));

PD_BUILD_OP(set_stop)
    .Inputs({"flag"})
    .Outputs({"flag_out"})
    .Attrs({"value: bool"})
    .SetInplaceMap({{"flag", "flag_out"}})
    .SetKernelFn(PD_KERNEL(fdo::flags::SetStop));
