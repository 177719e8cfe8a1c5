// The op library as one translation unit: paddle's headers cost most of a compile, so parsing them
// once instead of once per family makes a fresh build several times faster. Each family stays in its
// own file and namespace; this file only lists them.
#include "flags/stop_flag.cc"
#include "ipc/save_output.cc"
#include "model/activation.cc"
#include "model/attention.cc"
#include "model/embedding.cc"
#include "model/gemm.cc"
#include "model/init.cc"
#include "model/norm.cc"
#include "model/sampling.cc"
#include "step/insert_tasks.cc"
#include "step/padding.cc"
#include "step/token_update.cc"
#include "timing/timestamp.cc"
// Composes the model families above.
#include "model/decoder_layer.cc"
