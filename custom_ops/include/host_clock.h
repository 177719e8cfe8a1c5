// The host clock of every timestamp the op library writes: CLOCK_MONOTONIC in ns.
#pragma once

#include <time.h>

#include <cstdint>

namespace fdo {

inline int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace fdo
