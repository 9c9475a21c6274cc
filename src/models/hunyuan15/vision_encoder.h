#pragma once
// HunyuanVideo 1.5's image encoder for I2V: SigLIP so400m-patch14-384 (FLUX.1-Redux's image
// encoder; transformers' SiglipVisionModel, which hyvideo/models/vision_encoder VisionEncoder
// loads from vision_encoder/siglip/image_encoder) on a Backend: the CPU in fp32 (the reference)
// or the GPU (bf16 weights and activations, fp32 residual stream and norms).
//
// The pipeline passes last_hidden_state to the DiT: the 14x14 patches of the 384x384 image
// (27 x 27 = 729 tokens; the last 6 rows and columns fall outside every patch) embedded by a
// strided convolution plus a learned position table, then per layer x += out(attn(LN1(x))) (16
// heads, no mask) and x += fc2(gelu_tanh(fc1(LN2(x)))), then the post layer norm. The
// attention-pooling head is not used.
//
// The image reaches it through SiglipImageProcessor: resized to the model's square size with
// PIL's bicubic filter (its aspect ratio is not kept), rescaled by 1/255, normalised with mean
// and std 0.5, i.e. 8-bit values v become v / 127.5 - 1: on fisdit's [-1, 1] images that is
// media's resize_image(image, size, size, ResizeFilter::PilBicubic) and nothing more.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"

namespace fisdit::hunyuan15 {

// SiglipVisionConfig; defaults = so400m-patch14-384.
struct SiglipConfig {
  int64_t hidden = 1152;
  int64_t intermediate = 4304;
  int layers = 27;
  int heads = 16;
  int image_size = 384;
  int patch_size = 14;
  double eps = 1e-6;

  int64_t head_dim() const { return hidden / heads; }
  int64_t grid() const { return image_size / patch_size; }
  int64_t tokens() const { return grid() * grid(); }
  void validate(const std::string& where) const;
};

// SiglipVisionConfig keys (top level, or under "vision_config" of a whole SigLIP config).
SiglipConfig siglip_config_from_json(const nlohmann::json& j, const std::string& where);

// Called with host F32 copies: "embedding" [tokens, hidden] and "layer_<i>" [tokens, hidden]
// (transformers' hidden_states[0] and hidden_states[i + 1]).
using SiglipObserver = std::function<void(const std::string& name, const Tensor& host)>;

class SiglipEncoder {
 public:
  // `prefix`: what precedes "embeddings.patch_embedding.weight" ("vision_model." in the released
  // files). Every weight goes to the backend here (about 0.8 GB in bf16 at full size). Throws
  // naming the first missing or misshaped tensor.
  SiglipEncoder(SiglipConfig cfg, const Checkpoint& checkpoint, const std::string& prefix,
                Backend& backend);
  ~SiglipEncoder();
  SiglipEncoder(const SiglipEncoder&) = delete;
  SiglipEncoder& operator=(const SiglipEncoder&) = delete;

  const SiglipConfig& config() const { return cfg_; }
  // last_hidden_state for pixels [3, image_size, image_size] in [-1, 1]: host F32
  // [tokens, hidden]. Throws naming the expected shape otherwise.
  Tensor encode(const Tensor& pixels, const SiglipObserver& observer = {});

 private:
  struct Layer {
    Tensor ln1_w, ln1_b, q, q_b, k, k_b, v, v_b, o, o_b, ln2_w, ln2_b, fc1, fc1_b, fc2, fc2_b;
  };
  SiglipConfig cfg_;
  Backend& backend_;
  Tensor patch_w_, patch_b_, pos_, post_w_, post_b_;
  std::vector<Layer> layers_;
};

// A SigLIP vision checkpoint: a safetensors file or a directory (vision_encoder/siglip of the
// official download, whose image_encoder/ subfolder holds config.json and the weights; or that
// subfolder itself). The config comes from config.json, else the file's metadata ("config" ->
// "constructor"), else the tensor shapes (heads = hidden / 72, as so400m, eps 1e-6).
struct SiglipSource {
  Checkpoint checkpoint;
  std::string prefix;
  SiglipConfig config;
  std::string config_origin;
};
// nullopt when the path holds no SigLIP vision tower; other problems throw.
std::optional<SiglipSource> find_siglip(const std::string& path);
SiglipSource open_siglip(const std::string& path);  // throws naming the path when none is there
std::unique_ptr<SiglipEncoder> load_siglip(const SiglipSource& src, Backend& backend);

}  // namespace fisdit::hunyuan15
