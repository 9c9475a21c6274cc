#pragma once
// The umT5 text encoder of Wan (wan/modules/t5.py T5Encoder; the released umt5-xxl encoder) on a
// Backend: the CPU in fp32 (the reference), or the GPU (bf16 weights and activations, fp32
// residual stream, norms and softmax).
//
// Per block: x += o(attn(norm1(x))) with a per-layer relative position bias (shared_pos=False),
// then x += fc2(fc1(norm2(x)) * gelu_tanh(gate(norm2(x)))); a final norm after the last block.
// Semantics kept from the official code (fixtures README, "T5 (t5.py)"):
//   * attention logits are q.k + bias with NO 1/sqrt(head_dim) scaling;
//   * relative position buckets are bidirectional: 16 per direction (key after query +16), exact
//     below 8, log-spaced up to max_dist 128, clamped at 15, computed in float32 as torch does;
//   * the mask is a key mask: masked logits are replaced by float's lowest value
//     (masked_fill(finfo.min)), so a fully masked row attends uniformly, as upstream;
//   * T5LayerNorm is an RMS norm without mean or bias (eps 1e-6);
//   * T5EncoderModel.__call__ returns out[:mask.sum()] (the first mask.sum() rows).
//
// Weights stay in their stored dtype (bf16 for the released file: an mmap view, no copy) and go
// to the backend one block at a time during the forward: the CPU widens a block to fp32 (about
// 0.8 GB of scratch for the 5.7B-parameter encoder rather than 23 GB); the GPU receives a bf16
// file's matrices as stored (one block, ~0.4 GB, resident at a time).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"

namespace fisdit::wan {

// T5Encoder's constructor arguments (wan/modules/t5.py), defaults = umt5-xxl.
struct T5Config {
  int vocab = 256384;
  int dim = 4096;
  int dim_attn = 4096;
  int dim_ffn = 10240;
  int num_heads = 64;
  int num_layers = 24;
  int num_buckets = 32;
  bool shared_pos = false;
  int max_dist = 128;  // T5RelativeEmbedding's default, not a constructor argument of T5Encoder
  double eps = 1e-6;   // T5LayerNorm

  int head_dim() const { return dim_attn / num_heads; }
  // Throws fisdit::Error prefixed with `where` when the values cannot describe a T5Encoder.
  void validate(const std::string& where) const;
};

// Bucket of the relative position `key - query` (T5RelativeEmbedding._relative_position_bucket,
// bidirectional), evaluated in float32 exactly as the official torch expression.
int t5_relative_bucket(int64_t relative_position, int num_buckets, int max_dist);

// How the tensors are named in the file.
enum class T5KeyLayout : uint8_t {
  Official,     // T5Encoder.state_dict(): token_embedding.weight, blocks.N.attn.q.weight, ...
  HuggingFace,  // UMT5EncoderModel / ComfyUI: shared.weight, encoder.block.N.layer.0...
  // A T5Stack's own state_dict (T5ForConditionalGeneration.get_encoder(); HunyuanVideo 1.5's
  // Glyph-SDXL-v2 byT5 checkpoint): embed_tokens.weight, block.N.layer.0..., final_layer_norm.
  HuggingFaceStack,
};

// A parameter as stored: a host tensor in any float dtype, widened to fp32 only while it is used,
// times `scale` (the per-tensor `scale_weight` of a ComfyUI "scaled fp8" file; 1 otherwise).
struct T5Weight {
  Tensor stored;
  float scale = 1.0f;
};
// Supplies a parameter by its official T5Encoder key, of exactly `shape`; throws fisdit::Error
// naming the tensor when it is missing or misshaped.
using T5WeightFn = std::function<T5Weight(const std::string& official_key, const Shape& shape)>;

// Every parameter of T5Encoder, official key -> shape, in state_dict order.
std::vector<std::pair<std::string, Shape>> t5_parameter_shapes(const T5Config& cfg);

// The device bytes a T5Encoder that is not resident holds at most on a GPU while it encodes
// `sequences` prompts of up to `text_len` tokens: one block's weights (matrices in
// `weight_dtype`, vectors in F32) and each sequence's activations, counted in F32 (an
// over-estimate where they are bf16), the attention's [heads, L, L] scores included.
int64_t t5_streamed_bytes(const T5Config& cfg, DType weight_dtype, int64_t text_len, int sequences);

// Called with host copies of intermediate results: "embedding" [L, dim] and "block_<i>" [L, dim]
// (the hidden state after block i, before the final norm), as the fixtures name them.
using T5Observer = std::function<void(const std::string& name, const Tensor& host)>;

// One sequence for T5Encoder::forward_many / encode_many: token ids and their 0/1 key mask.
struct T5Input {
  std::vector<int64_t> ids, mask;
};

class T5Encoder {
 public:
  // Every op runs on `backend`; the weights stay on the host in their stored dtype and go to the
  // backend one block at a time during the forward.
  T5Encoder(T5Config cfg, Backend& backend, const T5WeightFn& weights);
  ~T5Encoder();
  T5Encoder(const T5Encoder&) = delete;
  T5Encoder& operator=(const T5Encoder&) = delete;

  const T5Config& config() const { return cfg_; }
  // Resident: the first pass leaves every block on the backend in the form its ops take (bf16
  // matrices, fp32 norms and position tables), and later passes read them there instead of
  // uploading the weights again (a kept-loaded generator: one new prompt costs the encoder's
  // compute, not 11 GB of copies). Off (the default), or turned off: one block at a time, freed
  // after use. Results are bit-identical either way.
  void set_resident(bool resident);
  bool resident() const { return resident_; }
  int64_t resident_bytes() const;  // device bytes held for the resident weights

  // T5Encoder.forward(ids, mask) for one sequence: `ids` token ids in [0, vocab), `mask` 0/1 of
  // the same length (0 = padding key). Returns [L, dim] F32 for every position, pads included.
  // Throws fisdit::Error naming the position for an out-of-range id or a mask value other than
  // 0/1.
  Tensor forward(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask,
                 const T5Observer& observer = {});
  // What T5EncoderModel.__call__ returns: forward(...) trimmed to its first sum(mask) rows
  // ([sum(mask), dim]). With a prefix mask (ones then zeros, as the tokenizer makes) only the
  // valid prefix is computed (same values: nothing there depends on padded positions), so the
  // observer then sees [sum(mask), dim] hidden states. Throws when the mask selects no token.
  Tensor encode(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask,
                const T5Observer& observer = {});

  // forward() / encode() of several sequences with one pass over the weights: each block goes to
  // the backend once for all of them (a prompt and its negative prompt stream the 5.7B-parameter
  // encoder once). Every result is bit-identical to the one-sequence call.
  std::vector<Tensor> forward_many(const std::vector<T5Input>& inputs);
  std::vector<Tensor> encode_many(const std::vector<T5Input>& inputs);

  struct BlockWeights;

 private:
  std::vector<Tensor> run(
      const std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>>& seqs,
      const T5Observer& observer);

  T5Config cfg_;
  Backend& backend_;
  T5Weight token_embedding_;  // [vocab, dim], stored dtype
  T5Weight shared_pos_;       // [num_buckets, num_heads] when shared_pos
  T5Weight final_norm_;       // [dim]
  std::vector<BlockWeights> blocks_;
  // One block as the ops take it: matrices in the weight dtype, norms and the position table in
  // fp32, each converted where models/weights.h says.
  struct DeviceBlock {
    Tensor norm1, wq, wk, wv, wo, table, norm2, wg, w1, w2;
    int64_t bytes() const;
  };
  DeviceBlock upload_block(int index);
  Tensor upload_vector(const T5Weight& w);  // a norm or position table, fp32 on the backend
  bool resident_ = false;
  std::vector<DeviceBlock> on_device_;  // resident: the blocks uploaded so far
  Tensor shared_table_, final_norm_device_;
};

// The encoder behind --text-encoder: a safetensors file, a torch.save .pth (as the released
// models_t5_umt5-xxl-enc-bf16.pth) or a checkpoint directory with the official T5Encoder keys or
// the Hugging Face UMT5EncoderModel keys, possibly under a prefix ("model.", "text_encoder.",
// ...). The config comes from the file's metadata (`config` JSON with
// a `constructor` object, as the fixtures store it), else from the tensor shapes: vocab and dim
// from the token embedding, dim_attn from q, dim_ffn from fc1, the layer count from the blocks,
// and num_buckets x num_heads from the relative position table (max_dist 128, or
// relative_attention_max_distance of a Hugging Face config.json).
//
// ComfyUI "scaled fp8" files (a `scaled_fp8` marker tensor and/or `<name>.scale_weight` tensors,
// one value each) load too: a weight with a `.scale_weight` is multiplied by it when it is widened
// to fp32, and in such a file every fp8 weight must have one (load_t5 throws naming the tensor
// otherwise). `.scale_input` tensors (inputs scales for fp8 matmuls) are not needed and ignored.
struct T5Source {
  Checkpoint checkpoint;
  std::string prefix;
  T5KeyLayout layout = T5KeyLayout::Official;
  T5Config config;
  std::string config_origin;  // "file metadata", "config.json" or "tensor shapes"
  bool scaled_fp8 = false;    // the file carries per-tensor fp8 scales
};
T5Source open_t5(const std::string& path);
// The checkpoint key holding an official T5Encoder key (with the prefix and layout applied).
std::string t5_checkpoint_key(const T5Source& src, const std::string& official_key);
// Builds the encoder on `backend` (throws naming the first missing or misshaped tensor).
std::unique_ptr<T5Encoder> load_t5(const T5Source& src, Backend& backend);

}  // namespace fisdit::wan
