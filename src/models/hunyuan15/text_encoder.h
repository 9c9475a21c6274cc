#pragma once
// HunyuanVideo 1.5's text encoder: the language model of Qwen2.5-VL-7B-Instruct
// (transformers' Qwen2_5_VLTextModel, which hyvideo/models/text_encoders TextEncoder loads as
// AutoModel(...).language_model) on a Backend: the CPU in fp32 (the reference) or the GPU (bf16
// weights and activations, fp32 residual stream, norms and softmax).
//
// Per decoder layer: x += o(attn(rms_norm(x))) and x += down(silu(gate(h)) * up(h)) with
// h = rms_norm(x). The attention is causal with grouped key/value heads, q/k/v projections with
// biases, and rotary positions on q and k. For text alone Qwen2.5-VL's multimodal RoPE gives
// every axis the same position, so it is the plain RoPE of Qwen2 (rotate_half over head_dim,
// inv_freq theta^(-2j/head_dim), positions 0..n-1): here q's and k's rows are reordered per head as
// they go to the backend (channel j and j + head_dim/2 become the adjacent pair 2j, 2j + 1), which
// leaves q.k as it was and lets Backend::rope_3d rotate them (all head_dim/2 pairs on one axis).
//
// The pipeline takes hidden_states[-(skip + 1)] with skip 2 and no final norm: the output of
// layer layers - 2. Only those layers run; the last two and the final norm are never read.
// With right padding and a causal mask the valid tokens do not see the padding, so only the
// valid tokens are encoded, at positions 0..n-1 as the official call gives them.
//
// Weights stay where the checkpoint keeps them (an mmap view) and go to the backend one layer at
// a time during a forward (bf16 as stored on the GPU, widened to fp32 on the CPU), or stay there
// after the first pass with set_resident(true).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"

namespace fisdit::hunyuan15 {

// Qwen2.5-VL's text config; defaults = Qwen2.5-VL-7B-Instruct.
struct QwenTextConfig {
  int64_t vocab = 152064;
  int64_t hidden = 3584;
  int64_t intermediate = 18944;
  int layers = 28;
  int heads = 28;
  int kv_heads = 4;
  double rope_theta = 1000000.0;
  double rms_eps = 1e-6;
  int skip_layers = 2;  // hidden_state_skip_layer of the pipeline

  int64_t head_dim() const { return hidden / heads; }
  int layers_run() const { return layers - skip_layers; }
  // Throws fisdit::Error prefixed with `where` when the values cannot describe the model.
  void validate(const std::string& where) const;
};

// The text part of a transformers config.json of Qwen2.5-VL (keys at the top level, or under
// "text_config" as newer transformers write it; rope_theta also under "rope_parameters").
// Missing keys keep the 7B defaults; `where` names the file in errors.
QwenTextConfig qwen_text_config_from_json(const nlohmann::json& j, const std::string& where);

// Called with host F32 copies: "embedding" [n, hidden] and "layer_<i>" [n, hidden] (the output
// of decoder layer i, i from 0, as transformers' hidden_states[i + 1]).
using QwenObserver = std::function<void(const std::string& name, const Tensor& host)>;

class QwenTextEncoder {
 public:
  // `prefix`: what precedes "embed_tokens.weight" and "layers.N..." in `checkpoint`'s names
  // ("model." for the released files). Throws naming the first missing or misshaped tensor.
  QwenTextEncoder(QwenTextConfig cfg, Checkpoint checkpoint, std::string prefix, Backend& backend);
  ~QwenTextEncoder();
  QwenTextEncoder(const QwenTextEncoder&) = delete;
  QwenTextEncoder& operator=(const QwenTextEncoder&) = delete;

  const QwenTextConfig& config() const { return cfg_; }
  // Keep each layer on the backend after its first use (no upload on later prompts).
  void set_resident(bool resident);

  // The hidden states the pipeline takes for the token ids `ids` (positions 0..n-1): host F32
  // [n, hidden]. Throws naming the position of an id outside the vocabulary, or for no ids.
  Tensor encode(const std::vector<int32_t>& ids, const QwenObserver& observer = {});

 private:
  struct Layer;        // host views of one layer's tensors
  struct DeviceLayer;  // the same on the backend, in the form the ops take
  DeviceLayer upload_layer(int index) const;

  QwenTextConfig cfg_;
  Checkpoint checkpoint_;
  std::string prefix_;
  Backend& backend_;
  Tensor embed_;  // [vocab, hidden] as stored
  std::vector<Layer> layers_;
  bool resident_ = false;
  std::vector<DeviceLayer> on_device_;
};

// A text encoder checkpoint: a safetensors file or a directory (text_encoder/llm of the official
// download: config.json and sharded safetensors with an index), with the language model's tensors
// under "model." (the released Qwen2.5-VL files), "model.language_model." or "language_model."
// (newer transformers), or no prefix. The config comes from config.json, else from the file's
// metadata ("config" -> "constructor" with config.json's keys, as the fixtures store it), else
// from the tensor shapes (head_dim 128, as every Qwen2.5 size has, rope_theta 1e6).
struct QwenTextSource {
  Checkpoint checkpoint;
  std::string prefix;
  QwenTextConfig config;
  std::string config_origin;  // "config.json", "file metadata" or "tensor shapes"
};
// Throws fisdit::Error naming the path when it holds no Qwen language model.
QwenTextSource open_qwen_text(const std::string& path);
// The same, but nullopt when the checkpoint holds no Qwen language model (another model's
// file); other problems (unreadable file, bad config) still throw.
std::optional<QwenTextSource> find_qwen_text(const std::string& path);
std::unique_ptr<QwenTextEncoder> load_qwen_text(const QwenTextSource& src, Backend& backend);

}  // namespace fisdit::hunyuan15
