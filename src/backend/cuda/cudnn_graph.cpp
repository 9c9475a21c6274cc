// The cuDNN backend (graph) API helpers of cudnn_graph.h.
#include "backend/cuda/cudnn_graph.h"

#if FISDIT_HAVE_CUDNN
#include <algorithm>

#include "backend/cuda/cuda_internal.h"

namespace fisdit::cuda {

std::string status_text(cudnnStatus_t st) {
  std::string s = cudnnGetErrorString(st);
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  if (detail[0] != '\0') s += std::string(" [") + detail + "]";
  return s;
}

Descriptor::Descriptor(cudnnBackendDescriptorType_t type, const char* what) : what_(what) {
  const cudnnStatus_t st = cudnnBackendCreateDescriptor(type, &d_);
  if (st != CUDNN_STATUS_SUCCESS) {
    d_ = nullptr;
    throw BuildError{std::string("create ") + what + ": " + status_text(st)};
  }
}

void Descriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                     int64_t count, const void* values, const char* attr) {
  const cudnnStatus_t st = cudnnBackendSetAttribute(d_, name, type, count, values);
  if (st != CUDNN_STATUS_SUCCESS)
    throw BuildError{std::string(what_) + " set " + attr + ": " + status_text(st)};
}

void Descriptor::set_desc(cudnnBackendAttributeName_t name, const Descriptor& other,
                          const char* attr) {
  cudnnBackendDescriptor_t raw = other.get();
  set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw, attr);
}

void Descriptor::finalize() {
  const cudnnStatus_t st = cudnnBackendFinalize(d_);
  if (st != CUDNN_STATUS_SUCCESS)
    throw BuildError{std::string(what_) + " finalize: " + status_text(st)};
}

void Descriptor::reset() {
  if (d_) cudnnBackendDestroyDescriptor(d_);
  d_ = nullptr;
}

Descriptor tensor_desc(const char* name, int64_t uid, cudnnDataType_t type,
                       std::span<const int64_t> dim, std::span<const int64_t> stride,
                       bool is_virtual, bool by_value, int64_t alignment) {
  if (dim.size() != stride.size())
    throw BuildError{std::string(name) + ": " + std::to_string(dim.size()) + " dims but " +
                     std::to_string(stride.size()) + " strides"};
  Descriptor t(CUDNN_BACKEND_TENSOR_DESCRIPTOR, name);
  const auto rank = static_cast<int64_t>(dim.size());
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "DATA_TYPE");
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, rank, dim.data(), "DIMENSIONS");
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, rank, stride.data(), "STRIDES");
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "UNIQUE_ID");
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "BYTE_ALIGNMENT");
  if (is_virtual) {
    const bool v = true;
    t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v, "IS_VIRTUAL");
  }
  if (by_value) {
    const bool v = true;
    t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &v, "IS_BY_VALUE");
  }
  t.finalize();
  return t;
}

Descriptor operation_graph(cudnnHandle_t handle, std::span<const cudnnBackendDescriptor_t> ops) {
  Descriptor graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
            static_cast<int64_t>(ops.size()), ops.data(), "OPS");
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "HANDLE");
  graph.finalize();
  return graph;
}

const char* heur_mode_name(cudnnBackendHeurMode_t mode) {
  return mode == CUDNN_HEUR_MODE_A ? "heuristics A" : "heuristics FALLBACK";
}

std::vector<Descriptor> engine_configs(const Descriptor& graph, cudnnBackendHeurMode_t mode,
                                       int64_t* listed) {
  const char* mode_name = heur_mode_name(mode);
  if (listed) *listed = 0;
  Descriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, mode_name);
  heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "OPERATION_GRAPH");
  heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "MODE");
  heur.finalize();
  int64_t count = 0;
  cudnnStatus_t st = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr);
  if (st != CUDNN_STATUS_SUCCESS)
    throw BuildError{std::string(mode_name) + " result count: " + status_text(st)};
  if (listed) *listed = count;
  std::vector<Descriptor> configs;
  if (count <= 0) return configs;
  // The results are copied into engine config descriptors made beforehand.
  std::vector<cudnnBackendDescriptor_t> raw(static_cast<size_t>(count));
  for (auto& r : raw) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config");
    r = configs.back().get();
  }
  int64_t got = 0;
  st = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data());
  if (st != CUDNN_STATUS_SUCCESS)
    throw BuildError{std::string(mode_name) + " results: " + status_text(st)};
  configs.resize(static_cast<size_t>(std::max<int64_t>(0, std::min(got, count))));
  return configs;
}

bool EngineInfo::has(cudnnBackendNumericalNote_t n) const {
  return std::find(notes.begin(), notes.end(), n) != notes.end();
}

EngineInfo engine_info(const Descriptor& config) {
  // The config's engine is copied into an engine descriptor made beforehand.
  Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine");
  cudnnBackendDescriptor_t raw = engine.get();
  int64_t n = 0;
  cudnnStatus_t st = cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &raw);
  if (st != CUDNN_STATUS_SUCCESS) throw BuildError{"engine config engine: " + status_text(st)};
  EngineInfo info;
  st = cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                &n, &info.global_index);
  if (st != CUDNN_STATUS_SUCCESS) throw BuildError{"engine global index: " + status_text(st)};
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  n = 0;
  st = cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n,
                                notes);
  if (st != CUDNN_STATUS_SUCCESS) throw BuildError{"engine numerical notes: " + status_text(st)};
  n = std::clamp<int64_t>(n, 0, CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
  info.notes.assign(notes, notes + n);
  return info;
}

ExecPlan finalize_plan(cudnnHandle_t handle, const Descriptor& config) {
  Descriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
  plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "HANDLE");
  plan.set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config, "ENGINE_CONFIG");
  plan.finalize();
  int64_t ws = 0, n = 0;
  const cudnnStatus_t st = cudnnBackendGetAttribute(
      plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
  if (st != CUDNN_STATUS_SUCCESS)
    throw BuildError{"execution plan workspace size: " + status_text(st)};
  return {std::move(plan), ws};
}

std::vector<PlanCandidate> find_plans(cudnnHandle_t handle, const Descriptor& graph, size_t max,
                                      std::string& why, int64_t max_workspace,
                                      const ConfigFilter& filter) {
  auto note = [&](const std::string& w) { why += (why.empty() ? "" : "; ") + w; };
  std::vector<PlanCandidate> found;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    if (found.size() >= max) break;
    const std::string mode_name = heur_mode_name(mode);
    std::vector<Descriptor> configs;
    try {
      int64_t listed = 0;
      configs = engine_configs(graph, mode, &listed);
      if (listed <= 0) {
        note(mode_name + ": no engine config");
        continue;
      }
      if (configs.empty()) {
        note(mode_name + ": no viable engine config among " + std::to_string(listed) +
             " result(s)");
        continue;
      }
    } catch (const BuildError& e) {
      note(e.what);
      continue;
    }
    for (size_t i = 0; i < configs.size() && found.size() < max; ++i) {
      const std::string where = mode_name + " config " + std::to_string(i);
      try {
        if (filter) {
          const std::string no = filter(configs[i]);
          if (!no.empty()) {
            note(where + ": " + no);
            continue;
          }
        }
        ExecPlan exec = finalize_plan(handle, configs[i]);
        if (exec.workspace > max_workspace) {
          note(where + ": workspace of " + std::to_string(exec.workspace) +
               " bytes over the cap of " + std::to_string(max_workspace));
          continue;
        }
        found.push_back({std::move(exec), std::move(configs[i]), mode, static_cast<int64_t>(i)});
      } catch (const BuildError& e) {
        note(where + ": " + e.what);
      }
    }
  }
  return found;
}

cudnnStatus_t execute_plan(cudnnHandle_t handle, const Descriptor& plan,
                           std::span<const int64_t> uids, std::span<void* const> ptrs,
                           void* workspace) {
  if (uids.size() != ptrs.size())
    throw BuildError{"variant pack: " + std::to_string(uids.size()) + " uids but " +
                     std::to_string(ptrs.size()) + " pointers"};
  const auto n = static_cast<int64_t>(uids.size());
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack");
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids.data(), "UNIQUE_IDS");
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs.data(),
           "DATA_POINTERS");
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, "WORKSPACE");
  pack.finalize();
  return cudnnBackendExecute(handle, plan.get(), pack.get());
}

}  // namespace fisdit::cuda

#endif  // FISDIT_HAVE_CUDNN
