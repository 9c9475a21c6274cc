// Kernels of the umT5 ops: attention with relative position bias and key mask (fp32 math on
// bf16/fp32 operands, one block per query and head) and the elementwise product.
#include <cfloat>

#include "backend/cuda/kernel_util.cuh"
#include "backend/cuda/t5.cuh"

namespace fisdit::cuda {

namespace {

constexpr int kRelThreads = 128;

// Dynamic shared memory: len + head_dim floats.
__global__ void attention_rel_bias_kernel(const void* q, const void* k, const void* v, EType t,
                                          const float* table, const int32_t* bucket_of,
                                          const int32_t* key_valid, void* out, EType ot,
                                          int64_t len, int64_t heads, int64_t hd) {
  extern __shared__ float smem[];
  __shared__ float scratch[33];
  float* scores = smem;
  float* qrow = smem + len;
  const int64_t i = blockIdx.x, h = blockIdx.y;
  for (int64_t c = threadIdx.x; c < hd; c += blockDim.x)
    qrow[c] = load(q, t, (i * heads + h) * hd + c);
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    float s = 0;
    for (int64_t c = 0; c < hd; ++c) s += qrow[c] * load(k, t, (j * heads + h) * hd + c);
    const float bias = key_valid[j]
                           ? table[static_cast<int64_t>(bucket_of[j - i + len - 1]) * heads + h]
                           : -FLT_MAX;  // masked_fill(finfo(float32).min)
    s += bias;
    scores[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_max(mx, scratch);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    const float p = expf(scores[j] - mx);
    scores[j] = p;
    sum += p;
  }
  sum = block_sum(sum, scratch);  // its __syncthreads also publishes scores
  __syncthreads();
  for (int64_t c = threadIdx.x; c < hd; c += blockDim.x) {
    float acc = 0;
    for (int64_t j = 0; j < len; ++j) acc += scores[j] * load(v, t, (j * heads + h) * hd + c);
    store(out, ot, (i * heads + h) * hd + c, acc / sum);
  }
}

__global__ void mul_kernel(void* x, EType xt, const void* y, EType yt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store(x, xt, i, load(x, xt, i) * load(y, yt, i));
}

}  // namespace

void launch_attention_rel_bias(const void* q, const void* k, const void* v, EType t,
                               const float* table, const int32_t* bucket_of,
                               const int32_t* key_valid, void* out, EType ot, int64_t len,
                               int64_t heads, int64_t hd, cudaStream_t s) {
  if (!len || !heads) return;
  const size_t shared = static_cast<size_t>(len + hd) * sizeof(float);
  attention_rel_bias_kernel<<<dim3(static_cast<unsigned>(len), static_cast<unsigned>(heads)),
                              kRelThreads, shared, s>>>(q, k, v, t, table, bucket_of, key_valid,
                                                        out, ot, len, heads, hd);
}

void launch_mul(void* x, EType xt, const void* y, EType yt, int64_t n, cudaStream_t s) {
  if (!n) return;
  mul_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, xt, y, yt, n);
}

}  // namespace fisdit::cuda
