#pragma once
// A stored weight put on a backend, for every model (the Wan DiT, umT5, the VAE and the families
// after them): one rule for where each conversion happens, so that its rounding is decided once.
//
// The CPU runs fp32: a weight is widened on the host (fp8 codes times their scale). A GPU gets
// the stored bytes (a bf16 file: no host conversion; fp8: a quarter of the fp32 bytes) and
// converts them there to the dtype the model keeps the weight in. A LoRA (models/lora.h) is
// merged into the fp32 weight where it will live, before any narrowing.
#include <cstdint>
#include <stop_token>
#include <string>

#include "core/tensor.h"
#include "io/weights.h"
#include "models/lora.h"

namespace fisdit {
class Backend;
}

namespace fisdit::models {

// Where a load made ahead (on a thread beside the ops) may also put the weights on the device:
// `backend` (none: it reads them only) through Backend::upload_beside, while at least `reserve`
// bytes of its free memory stay free for the ops that run meanwhile.
struct UploadAhead {
  Backend* backend = nullptr;
  int64_t reserve = 0;
};

// `stored` (a host tensor of a float dtype, e.g. a read-only view of the file) times `scale` as a
// host F32 tensor: `stored` itself when it already is F32 and `scale` is 1, else a new tensor.
Tensor widen_to_f32(const Tensor& stored, float scale);

// `stored` times `scale` on `backend` in `dtype` (F32, or the backend's weight_dtype()):
//   CPU  widen_to_f32 (then Backend::upload for a dtype other than F32);
//   GPU  fp8 codes go up as they are and are widened with their scale there
//        (Backend::dequantize); an unscaled weight goes up as stored and the backend converts it
//        as it copies (Backend::upload); a scaled one of another dtype is widened on the host.
// The result may share `stored` (CPU, F32, scale 1). `stored` may already be on a GPU backend's
// device (Backend::upload_beside) when it is fp8 or unscaled; another device tensor throws
// fisdit::Error.
Tensor upload_weight(const Tensor& stored, float scale, Backend& backend, DType dtype);

// The weight `canonical` of `weights` (of exactly `shape`) as a host F32 tensor of its own
// (WeightSource::get: fp8 times its scale), with the deltas of `lora` added when it changes it.
Tensor host_weight(const WeightSource& weights, const std::string& canonical, const Shape& shape,
                   const LoraMerge* lora = nullptr);

// The weight `canonical` of `weights` (of exactly `shape`) on `backend` in `dtype`:
//   CPU  host_weight (then Backend::upload for a dtype other than F32);
//   GPU  without a LoRA, upload_weight of WeightSource::get_stored; with one, the weight in fp32
//        on the device (fp8 dequantised with its scale, bf16 / f32 uploaded as stored and widened
//        there, f16 widened on the host), the LoRA merged there, then converted to `dtype`.
// Throws fisdit::Error naming the tensor when it is missing or misshaped (WeightSource::get).
Tensor load_weight(const WeightSource& weights, const std::string& canonical, const Shape& shape,
                   Backend& backend, DType dtype, const LoraMerge* lora = nullptr);
// load_weight's GPU path from the stored tensor and its scale (WeightSource::get_stored's), on the
// host or already on the device (upload_weight says which may be).
Tensor load_stored_weight(const Tensor& stored, float scale, const std::string& canonical,
                          Backend& backend, DType dtype, const LoraMerge* lora = nullptr);
// load_weight of a weight whose host_weight was made ahead (`host`, the CPU backend's path):
// `host` itself for F32, else Backend::upload in `dtype`.
Tensor load_host_weight(Tensor host, Backend& backend, DType dtype);

// ---- Reading ahead: the host side of a load done before it, on a thread of its own while
// another model runs (fisdit generate: the first DiT expert while the text encoder runs). No
// backend is involved.

// Reads the bytes of `canonical` as stored (touches every page of its view of the file), so that
// loading it later copies from memory instead of waiting on the disk; returns their count (0 when
// the tensor is absent: the load says so).
int64_t read_ahead(const WeightSource& weights, const std::string& canonical);
// The same for every tensor of `checkpoint` in file order, while the bytes read stay within
// `budget`; stops early when `stop` is requested. Returns the bytes read.
int64_t read_ahead(const Checkpoint& checkpoint, int64_t budget, std::stop_token stop);
// Host memory the system could give now without swapping (Linux: MemAvailable); -1 when unknown.
int64_t host_memory_available();

}  // namespace fisdit::models
