// The libtorch settings a GPU run needs to be judged against eager, which tch does not expose:
// TF32 off for cuBLAS and cuDNN (TF32 rounds float32 matmuls and convolutions to 10 mantissa
// bits), cuDNN deterministic and not benchmarking (benchmarking may pick another algorithm per
// run). The worker sets the same in Python (harness_worker/eager.py). Each call only sets a flag
// of ATen's global context, so it is safe without a GPU; the getters let a test read them back.
#include <ATen/Context.h>

extern "C" {

void harness_set_exact_numerics(int exact) {
  auto& ctx = at::globalContext();
  ctx.setAllowTF32CuBLAS(!exact);
  ctx.setAllowTF32CuDNN(!exact);
  ctx.setDeterministicCuDNN(exact != 0);
  ctx.setBenchmarkCuDNN(false);
}

// Bit 0: TF32 allowed in cuBLAS; 1: TF32 allowed in cuDNN; 2: cuDNN deterministic;
// 3: cuDNN benchmarking.
int harness_numerics_flags() {
  auto& ctx = at::globalContext();
  return (ctx.allowTF32CuBLAS() ? 1 : 0) | (ctx.allowTF32CuDNN() ? 2 : 0) |
         (ctx.deterministicCuDNN() ? 4 : 0) | (ctx.benchmarkCuDNN() ? 8 : 0);
}
}
