#pragma once
// The cuDNN 9 backend (graph) C API as the CUDA backend drives it, without the frontend library:
// owned descriptors, tensor descriptors, the search "heuristics -> engine configs -> finalized
// execution plans", timing a plan on the engine's stream and running it with a variant pack.
// Used by the fused attention (attention.cpp) and the VAE convolutions (video_engine.cpp).
//
// Failures while building something (a descriptor attribute cuDNN refuses, a finalize that
// fails, a heuristics query that fails) throw BuildError: the caller treats the graph or the
// candidate as declined and takes its fallback. Only builds with cuDNN (FISDIT_HAVE_CUDNN) have
// any of this.
#if FISDIT_HAVE_CUDNN
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace fisdit::cuda {

// cuDNN's name of a status, with the detail of cudnnGetLastErrorString when it has one (call it
// right after the failing call: the detail is the thread's last error).
std::string status_text(cudnnStatus_t st);

// A failure while building a graph or a plan: cuDNN does not take it (the caller falls back).
struct BuildError {
  std::string what;
};

// Owns one backend descriptor. `what` names it in BuildError messages (a string literal or
// another string that outlives the descriptor).
class Descriptor {
 public:
  Descriptor() = default;
  Descriptor(cudnnBackendDescriptorType_t type, const char* what);
  ~Descriptor() { reset(); }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  Descriptor(Descriptor&& o) noexcept : d_(std::exchange(o.d_, nullptr)), what_(o.what_) {}
  Descriptor& operator=(Descriptor&& o) noexcept {
    if (this != &o) {
      reset();
      d_ = std::exchange(o.d_, nullptr);
      what_ = o.what_;
    }
    return *this;
  }

  cudnnBackendDescriptor_t get() const { return d_; }
  const char* what() const { return what_; }

  // Sets an attribute; a failure is a BuildError naming the descriptor and the attribute.
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* values, const char* attr);
  void set_desc(cudnnBackendAttributeName_t name, const Descriptor& other, const char* attr);
  void finalize();

 private:
  void reset();
  cudnnBackendDescriptor_t d_ = nullptr;
  const char* what_ = "";
};

// A finalized tensor descriptor: `dim` and `stride` (as many as dim has, in elements) say the
// memory layout; `alignment` is the byte alignment every pointer bound to `uid` keeps (cuDNN
// picks kernels that rely on it).
Descriptor tensor_desc(const char* name, int64_t uid, cudnnDataType_t type,
                       std::span<const int64_t> dim, std::span<const int64_t> stride,
                       bool is_virtual, bool by_value, int64_t alignment = 16);

// The finalized operation graph of `ops` (finalized operation descriptors) on `handle`.
Descriptor operation_graph(cudnnHandle_t handle, std::span<const cudnnBackendDescriptor_t> ops);

// "heuristics A" / "heuristics FALLBACK" (the heuristic modes the search uses), for messages.
const char* heur_mode_name(cudnnBackendHeurMode_t mode);

// The engine configs the heuristics of `mode` give for `graph`, in their order (deterministic for
// a GPU and cuDNN version). Empty when there are none; `listed` (where given) gets how many
// results the heuristics counted, which may be more than they then return. Throws BuildError
// when the query fails.
std::vector<Descriptor> engine_configs(const Descriptor& graph, cudnnBackendHeurMode_t mode,
                                       int64_t* listed = nullptr);

// What an engine config runs: its engine's global index and numerical notes.
struct EngineInfo {
  int64_t global_index = -1;
  std::vector<cudnnBackendNumericalNote_t> notes;
  bool has(cudnnBackendNumericalNote_t n) const;
};
EngineInfo engine_info(const Descriptor& config);

// A finalized execution plan and its workspace bytes.
struct ExecPlan {
  Descriptor plan;
  int64_t workspace = 0;
};
ExecPlan finalize_plan(cudnnHandle_t handle, const Descriptor& config);

// One plan of the search, with the engine config it was made from (kept alive with it) and where
// the heuristics listed that config: `mode`'s results, position `index`.
struct PlanCandidate {
  ExecPlan exec;
  Descriptor config;
  cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  int64_t index = 0;
};

// Says why an engine config is not wanted ("" takes it); asked before the config is finalized.
using ConfigFilter = std::function<std::string(const Descriptor& config)>;

// Heuristics mode A, then FALLBACK: every engine config the filter takes is finalized, in the
// heuristics' order, until `max` plans are found; plans needing more than `max_workspace` bytes
// are dropped. A config that fails (or a mode whose heuristics fail) is skipped with a note in
// `why` ("; "-separated). Returns the plans found, possibly none.
std::vector<PlanCandidate> find_plans(cudnnHandle_t handle, const Descriptor& graph, size_t max,
                                      std::string& why,
                                      int64_t max_workspace = std::numeric_limits<int64_t>::max(),
                                      const ConfigFilter& filter = {});

// Runs `plan` with the variant pack (uids[i] -> ptrs[i]) and `workspace` (null where the plan
// needs none) on the handle's stream. Returns cudnnBackendExecute's status; a variant pack cuDNN
// refuses throws BuildError.
cudnnStatus_t execute_plan(cudnnHandle_t handle, const Descriptor& plan,
                           std::span<const int64_t> uids, std::span<void* const> ptrs,
                           void* workspace);

}  // namespace fisdit::cuda

#endif  // FISDIT_HAVE_CUDNN
