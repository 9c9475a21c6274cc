#pragma once
// The seam between a model family and what drives it. Samplers (sched/), execution strategies
// (accel/: the FIS plan, MagCache) and the analysis see a VelocityModel: a stack of blocks over
// latent frames that predicts the flow velocity, conditioned on a text side it embeds once per
// prompt. They never see a family's internals; a family lives in models/<family>/ and registers
// in models/family.cpp.
//
// The text side is cross-attended in every block (Wan) or joined with the video tokens in one
// attention (HunyuanVideo 1.5's double-stream blocks); FIS plans cover the video tokens only
// (FIS.md, MMDiT section), so one plan type fits both.
#include <array>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "accel/fis.h"
#include "backend/backend.h"
#include "fisdit/error.h"
#include "models/task.h"

namespace fisdit::models {

// A prompt as the model's text side takes it, on the host. `states`: the text encoder's output
// [L, dim] (Wan: umT5). `extra`: further named streams of a family's text side (HunyuanVideo 1.5:
// the glyph encoder's states of the quoted text).
struct TextContext {
  Tensor states;
  std::map<std::string, Tensor> extra;

  TextContext() = default;
  TextContext(Tensor text_states) : states(std::move(text_states)) {}  // NOLINT: implicit
  bool defined() const { return states.defined(); }
};

// A prompt's text side made by VelocityModel::embed_text on the backend, given to every step's
// forward. `states`: the rows the blocks attend (Wan: the embedded context). `extra`: further
// named parts of a family's text side (HunyuanVideo 1.5: its prompt rows still go through the
// timestep-dependent token refiner at each step, the vision and glyph rows and the pooled
// context do not). `blocks`: what each block derives from the text alone, made once per prompt
// instead of in every forward (Wan: each block's cross-attention keys and values); empty where a
// model derives them in the forward. `revision`: the model's weights when `blocks` were made (a
// forward refuses blocks made before its weights changed, e.g. by set_precision).
struct BlockText {
  Tensor k, v;
};
struct TextEmbedding {
  Tensor states;
  std::map<std::string, Tensor> extra;
  std::vector<BlockText> blocks;
  int revision = 0;
};

// A latent video grid: frames, rows, columns (before the DiT's patchify).
struct LatentGrid {
  int64_t frames = 0, height = 0, width = 0;
};

// What the sampler and the strategies need to know of a model.
struct ModelInfo {
  std::string family;  // "wan"
  Task task = Task::T2V;
  int num_blocks = 0;
  int dim = 0;              // width of the block stack's hidden state
  int num_heads = 0;        // of the blocks' attention: dim / num_heads channels each
  int in_channels = 0;      // the latent plus any channels concatenated to it (I2V's y)
  int latent_channels = 0;  // of the latent, and of the predicted velocity
  // The text side's input, TextContext::states [tokens, text_dim]: the most tokens it takes
  // (Wan: umT5 states, padded to 512) and their width.
  int text_tokens = 0, text_dim = 0;
  // Further streams of the text side (TextContext::extra) the model reads, name -> [most tokens,
  // width] (HunyuanVideo 1.5: "byt5" [256, 1472] glyph states, "vision" [729, 1152] for I2V).
  std::map<std::string, std::array<int, 2>> text_extra;
  std::array<int, 3> patch = {1, 1, 1};       // DiT patch (t, h, w) in latent cells
  std::array<int, 3> vae_stride = {4, 8, 8};  // video frames/pixels per latent cell (t, h, w)
  // Two-expert models (Wan 2.2 A14B): the high-noise expert runs while the timestep is at least
  // boundary * 1000. The family's default for this task (t2v 0.875, i2v 0.9).
  float expert_boundary = 0.875f;
  // MeanFlow models (HunyuanVideo 1.5's step-distilled one) take the next step's timestep r.
  bool meanflow = false;
  // Device memory one forward over `grid` needs beside the weights, with activations of
  // `activation_bytes` per element (bf16: 2), FIS plans (`fis`) and MagCache's kept residual
  // (`cache`): an upper estimate, which --gpu-memory-limit keeps free when it places the weights
  // (models/offload.h).
  std::function<int64_t(const LatentGrid& grid, int activation_bytes, bool fis, bool cache)>
      activation_bytes;
  // Analytic matrix-multiply FLOPs (2 per multiply-add) of one forward over `grid` with blocks
  // as `plan` says on a step whose gate is `step_open` (dense without a plan), `timestep_rows`
  // distinct timesteps (TI2V: 2). Linear layers and attention products, as the paper counts.
  std::function<double(const LatentGrid& grid, const accel::FisPlan* plan, bool step_open,
                       int64_t timestep_rows)>
      forward_flops;

  // The latent grid of a video of `frames` frames of width x height pixels: throws naming the
  // parameter when the video does not divide into whole latent cells and DiT patches.
  LatentGrid latent_grid(int width, int height, int frames) const;
  // Latent frames after the DiT's temporal patchify: the frames FIS plans over.
  int64_t plan_frames(const LatentGrid& grid) const { return grid.frames / patch[0]; }
};

// The timestep of one forward: t on the host, [1] or one per token [1, tokens] (TI2V gives the
// tokens of frame 0 t = 0), and for MeanFlow models r, the next step's timestep (0 at the last).
struct Timestep {
  Tensor t;
  std::optional<float> r;
};

// Called with intermediate results (host copies) during a forward, named as the fixtures name
// them (Wan: x_embed, e, e0, context, block_<i>, head_out); "block_<i>" is every family's output
// of block i on the video tokens, which the redundancy analysis reads.
using ForwardObserver = std::function<void(const std::string& name, const Tensor& host)>;

// MagCache's hook into one forward (accel/magcache.h): the residual of the block stack, i.e. the
// video hidden state after the last block minus the one entering the first block (device
// [tokens, dim] F32).
struct BlockStackResidual {
  const Tensor* apply = nullptr;  // skip every block: h = embed(x) + *apply, then the head
  Tensor* keep = nullptr;         // when the blocks run: *keep = their output - input
};

struct ForwardOptions {
  const accel::FisPlan* plan = nullptr;  // blocks follow plan->plan_for(step_open, block)
  bool step_open = true;
  ForwardObserver observer;
  BlockStackResidual stack;  // keeping the residual does not change the output
};

// The arithmetic of the block stack: the backend's own (bf16 on CUDA, fp32 on the CPU); Fp8Gemm
// (--precision fp8-gemm): the block matrices in FP8 E4M3 (weights per output channel,
// activations per token, core/quantize.h); Fp8 (--precision fp8): those and the self-attention
// with q, k and v in E4M3, one scale per tensor (Backend::attention_fp8).
enum class Precision : uint8_t { Default, Fp8, Fp8Gemm };
// The block matrices are E4M3.
inline bool fp8_matrices(Precision p) { return p != Precision::Default; }
// "bf16", "fp8" or "fp8-gemm", the --precision names.
const char* precision_name(Precision p);
// The Precision of a --precision name; nullopt for any other name.
std::optional<Precision> parse_precision(std::string_view name);

class VelocityModel {
 public:
  virtual ~VelocityModel() = default;
  virtual const ModelInfo& info() const = 0;
  virtual Backend& backend() = 0;
  // The text side of one prompt on the backend, made once and given to every step's forward.
  virtual TextEmbedding embed_text(const TextContext& text) = 0;
  // One forward: `x` the device latent [in_channels, F, H, W] (conditioning channels already
  // concatenated), `text` from embed_text. Returns the device velocity [latent_channels, F, H, W].
  virtual Tensor forward(const Tensor& x, const Timestep& time, const TextEmbedding& text,
                         const ForwardOptions& options) = 0;
  // Where the weights are, for the log, when not all on the device (--gpu-memory-limit): "12 of
  // 40 blocks streamed from host memory ..."; "" when they are.
  virtual std::string placement() const { return ""; }
  // Switches the block matrices to `precision` (quantizing the loaded weights); throws naming what
  // does not support it (the model, the backend, offloaded blocks).
  virtual void set_precision(Precision precision) {
    if (precision != Precision::Default) throw Error("this model has no --precision fp8 path");
  }
};

// [Ca, ...] and [Cb, ...] with equal trailing dims -> [Ca + Cb, ...] on the backend: a latent and
// the conditioning channels concatenated to it (I2V's y).
Tensor concat_channels(Backend& backend, const Tensor& a, const Tensor& b);

}  // namespace fisdit::models
