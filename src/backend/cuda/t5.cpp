// The CUDA backend's umT5 ops next to their kernels (t5.cu): self-attention with relative
// position bias and key mask (buckets and flags copied to the GPU per call), and the elementwise
// product of the gated FFN.
#include <string>
#include <vector>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/profile.h"
#include "backend/cuda/t5.cuh"

namespace fisdit::cuda {

void CudaBackend::do_attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const Tensor& table, const std::vector<int32_t>& bucket_of,
                                        const std::vector<uint8_t>& key_valid, Tensor& out) {
  const char* op = "attention_rel_bias";
  require_device(q, op, "q");
  require_device(k, op, "k");
  require_device(v, op, "v");
  require_device(table, op, "table");
  require_device(out, op, "out");
  const int64_t len = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  require((len + hd) * sizeof(float) <= 48 * 1024, op,
          std::to_string(len) + " positions exceed the kernel's shared memory");
  if (!len) return;
  OpScope scope(stream(), op);
  // Buckets and key flags as I32 on the device (pageable copies: staged before the call returns).
  Tensor meta = empty({3 * len - 1}, DType::I32);
  std::vector<int32_t> host(bucket_of.begin(), bucket_of.end());
  for (uint8_t f : key_valid) host.push_back(f ? 1 : 0);
  check(cudaMemcpyAsync(meta.raw(), host.data(), host.size() * sizeof(int32_t),
                        cudaMemcpyHostToDevice, stream()),
        op, "buckets");
  const int32_t* buckets = meta.data_as<int32_t>();
  launch_attention_rel_bias(q.raw(), k.raw(), v.raw(), etype(q.dtype(), op, "q"),
                            table.data_as<float>(), buckets, buckets + 2 * len - 1, out.raw(),
                            etype(out.dtype(), op, "out"), len, heads, hd, stream());
  check_launch(op, desc(q), stream());
  // The host vector must outlive the copy.
  check(cudaStreamSynchronize(stream()), op, "buckets");
}

void CudaBackend::do_mul(Tensor& x, const Tensor& y) {
  const char* op = "mul";
  require_device(x, op, "x");
  require_device(y, op, "y");
  OpScope scope(stream(), op);
  launch_mul(x.raw(), etype(x.dtype(), op, "x"), y.raw(), etype(y.dtype(), op, "y"), x.numel(),
             stream());
  check_launch(op, desc(x), stream());
}

}  // namespace fisdit::cuda
