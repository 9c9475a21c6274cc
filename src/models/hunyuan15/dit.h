#pragma once
// The HunyuanVideo 1.5 DiT (hyvideo/models/transformers/hunyuanvideo_1_5_transformer.py
// HunyuanVideo_1_5_DiffusionTransformer.forward) on any backend, dense or with an FIS plan.
//
// The text side is [vision tokens (I2V) ; glyph tokens ; prompt tokens], valid tokens only: the
// official forward masks the padding of each stream in every attention, so a padded token never
// reaches a video token and dropping it gives the same video output (HUNYUAN15.md, section 2).
// A T2V run gives no vision tokens (the official code masks all-zero vision states) and a prompt
// without quoted text no glyph tokens.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "accel/fis.h"
#include "backend/backend.h"
#include "models/hunyuan15/config.h"
#include "models/model.h"

namespace fisdit::hunyuan15 {

// Supplies a weight by its official name as a host tensor of exactly `shape`; throws
// fisdit::Error naming the tensor when it is missing or misshaped.
using WeightFn = std::function<Tensor(const std::string& name, const Shape& shape)>;

// Every parameter of the official module, name -> shape (official checkpoint names).
std::vector<std::pair<std::string, Shape>> dit_parameter_shapes(const HunyuanConfig& cfg);

// The family-agnostic description of a config (models/model.h), FLOPs included. FLOPs and the
// activation estimate count a text side of text_len prompt tokens plus, for I2V, the vision
// tokens (the most a run gives without glyph tokens).
models::ModelInfo model_info(const HunyuanConfig& cfg);

// Analytic matrix-multiply FLOPs of one forward, counting every product the engine runs (linear
// layers, modulation and embedding matrices, attention products): `prompt_tokens` through the
// token refiner, `side_tokens` (the whole text side, prompt included) dense in every block
// (FIS.md MMDiT section), the video tokens as `plan` says.
double forward_flops(const HunyuanConfig& cfg, int64_t grid_f, int64_t grid_h, int64_t grid_w,
                     int64_t prompt_tokens, int64_t side_tokens, const accel::FisPlan* plan,
                     bool step_open);

class HunyuanDiT final : public models::VelocityModel {
 public:
  // An fp8 `precision` quantizes each block's twelve matrices as the block loads.
  HunyuanDiT(HunyuanConfig cfg, Backend& backend, const WeightFn& weights,
             models::Precision precision = models::Precision::Default);

  const HunyuanConfig& config() const { return cfg_; }
  const models::ModelInfo& info() const override { return info_; }
  Backend& backend() override { return backend_; }

  // text.states: the prompt's hidden states [L, text_dim] (valid tokens, 1 <= L <= text_len);
  // text.extra "byt5": the glyph encoder's states of the quoted text [Lb, byt5_in] (optional),
  // "vision": the first frame's SigLIP states [Lv, vision_dim] (I2V; optional). Returns the
  // parts that do not depend on the timestep: the prompt rows through input_embedder
  // (`states`), the pooled context through c_embedder ("pooled") and the vision and glyph rows
  // through their projections with their condition-type rows added ("side").
  models::TextEmbedding embed_text(const models::TextContext& text) override;

  // x [in_dim, F, H, W] (latent, condition latent, mask), time.t [1], time.r for MeanFlow
  // (none: time_r_in is skipped, as the official forward does without timestep_r). Observer
  // names: x_embed, vec, txt_refined, context (the text side entering block 0), block_<i> and
  // txt_block_<i> (each stream after block i), head_out.
  Tensor forward(const Tensor& x, const models::Timestep& time, const models::TextEmbedding& text,
                 const models::ForwardOptions& options) override;
  // --precision fp8 / fp8-gemm (models/model.h): each double-stream block's q, k, v, proj, fc1
  // and fc2 of both streams as E4M3 (per output channel; activations per token), and with fp8
  // the joint attention through Backend::attention_fp8. The embeddings, the refiner, the
  // modulations and the final layer stay in the default precision.
  void set_precision(models::Precision precision) override;
  models::Precision precision() const { return precision_; }

 private:
  struct Linear {
    Tensor w, b;
    Fp8Rows q;  // --precision fp8: w as E4M3 rows (w is then dropped)
  };
  // The input of one or more block matrices: quantized once per token in fp8.
  struct MatrixInput {
    Tensor x;
    Fp8Rows q;
  };
  MatrixInput matrix_input(const Tensor& x);
  // y = act(x . W^T + b) for a block matrix, in the model's precision.
  void block_linear(const MatrixInput& in, const Linear& l, Tensor& y,
                    Activation act = Activation::None);
  void quantize_block(int index);
  struct Stream {  // one stream (img or txt) of a double-stream block
    Linear mod, q, k, v, proj, fc1, fc2;
    Tensor q_norm, k_norm;
  };
  struct Block {
    Stream img, txt;
  };
  struct RefinerBlock {
    Tensor norm1_w, norm1_b, norm2_w, norm2_b;
    Linear q, k, v, proj, fc1, fc2, ada;
  };
  struct TimeEmbedder {
    Linear l0, l2;
  };

  // Linear(SiLU(c)) of `c_act` (= SiLU(c), [1, hidden] F32) as a modulation table [1, chunks, D].
  Modulation modulation(const Linear& l, const Tensor& c_act, int chunks);
  Tensor embed_time(const TimeEmbedder& e, float t);  // [1, hidden] F32
  void linear(const Tensor& x, const Linear& l, Tensor& y, Activation act = Activation::None);
  // The token refiner on the prompt rows x [L, D] (F32, in place), conditioned on c_act.
  void refine(Tensor& x, const Tensor& c_act);
  // Per-head q/k RMSNorm of rows [n, D] in place.
  void head_norm(Tensor& x, const Tensor& weight);
  // One double-stream block on the video rows `img` (positions `grid`) and the text side `txt`,
  // both F32 and updated in place.
  void run_block(int index, Tensor& img, Tensor& txt, const Tensor& vec_act, const RopeGrid& grid);

  HunyuanConfig cfg_;
  models::ModelInfo info_;
  Backend& backend_;
  Linear img_in_, final_mod_, final_linear_;
  TimeEmbedder time_in_, time_r_in_, refiner_time_;
  Linear input_embedder_, c_linear1_, c_linear2_;
  std::vector<RefinerBlock> refiner_;
  Tensor byt5_norm_w_, byt5_norm_b_;
  Linear byt5_fc1_, byt5_fc2_, byt5_fc3_;
  Tensor vision_norm0_w_, vision_norm0_b_, vision_norm4_w_, vision_norm4_b_;
  Linear vision_fc1_, vision_fc3_;
  std::vector<Tensor> cond_rows_;  // cond_type_embedding rows on the device (F32 [hidden])
  std::vector<Block> blocks_;
  models::Precision precision_ = models::Precision::Default;
};

}  // namespace fisdit::hunyuan15
