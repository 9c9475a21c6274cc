#pragma once
// The Wan 2.2 DiT (wan/modules/model.py WanModel) on any backend, dense or with an FIS plan.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "backend/backend.h"
#include "backend/graph_cache.h"
#include "core/quantize.h"
#include "models/model.h"
#include "models/offload.h"
#include "models/wan/config.h"

namespace fisdit::wan {

// Supplies a weight by its official (canonical) name as a host tensor of exactly `shape`;
// throws fisdit::Error naming the tensor when it is missing or misshaped.
using WeightFn = std::function<Tensor(const std::string& canonical, const Shape& shape)>;
// --precision fp8: a block matrix already stored as E4M3 codes with a scale (a ComfyUI scaled fp8
// file), as Fp8Rows on the backend (the per-tensor scale repeated per row), so that it is used as
// stored rather than widened and quantized again; nullopt when it is not (or a LoRA changes it).
using StoredFp8Fn =
    std::function<std::optional<Fp8Rows>(const std::string& canonical, const Shape& shape)>;

// Every parameter of WanModel, canonical name -> shape, in state_dict order.
std::vector<std::pair<std::string, Shape>> dit_parameter_shapes(const WanConfig& cfg);

// Device bytes of the weights as WanDiT keeps them with matrices in `weight_dtype` (modulation
// tables fp32): one block's, and those outside the blocks.
struct DitBytes {
  int64_t block = 0, other = 0;
};
// With an fp8 `precision` the blocks' ten matrices count as E4M3 codes and their row scales.
DitBytes dit_device_bytes(const WanConfig& cfg, DType weight_dtype,
                          models::Precision precision = models::Precision::Default);

// Intermediate results of a forward (models/model.h), named as the fixtures name them: x_embed,
// e, e0, context, block_<i>, head_out.
using models::ForwardObserver;
// MagCache's block-stack residual: the hidden state after the patch embedding, before the head.
using models::BlockStackResidual;

// The family-agnostic description of a config (models/model.h), FLOPs included.
models::ModelInfo model_info(const WanConfig& cfg);

struct DitBlockWeights {
  Tensor modulation;  // [6 * dim]
  Tensor sa_q_w, sa_q_b, sa_k_w, sa_k_b, sa_v_w, sa_v_b, sa_o_w, sa_o_b, sa_norm_q, sa_norm_k;
  Tensor ca_q_w, ca_q_b, ca_k_w, ca_k_b, ca_v_w, ca_v_b, ca_o_w, ca_o_b, ca_norm_q, ca_norm_k;
  Tensor norm3_w, norm3_b;
  Tensor ffn_in_w, ffn_in_b, ffn_out_w, ffn_out_b;
  // Every tensor above that is defined and the fp8 codes and scales (what a BlockStreamer moves).
  std::vector<Tensor*> tensors();
  // The block's ten matrices, in the order of Matrix below; --precision fp8 keeps them as E4M3
  // codes and scales in `fp8` (same order) instead.
  enum Matrix { SaQ, SaK, SaV, SaO, CaQ, CaK, CaV, CaO, FfnIn, FfnOut, kMatrices };
  Tensor* matrix(int m);
  const Tensor* matrix(int m) const { return const_cast<DitBlockWeights*>(this)->matrix(m); }
  std::vector<Fp8Rows> fp8;
};

class WanDiT final : public models::VelocityModel {
 public:
  // An fp8 `precision` quantizes each block's matrices as the block loads (the peak holds one block
  // in the default precision, not the whole model); set_precision does it after the load.
  WanDiT(WanConfig cfg, Backend& backend, const WeightFn& weights,
         models::Precision precision = models::Precision::Default,
         const StoredFp8Fn& stored_fp8 = {});

  const WanConfig& config() const { return cfg_; }
  const models::ModelInfo& info() const override { return info_; }
  // Module-granularity FIS reconstructs the block's total update once (equal to reconstructing
  // each branch, up to float rounding, because the interpolation is linear). true runs the three
  // branch reconstructions literally, as FIS.md words them: the reference for tests.
  void set_literal_module_reconstruction(bool literal) { literal_module_reconstruction_ = literal; }
  Backend& backend() override { return backend_; }
  // Under the backend's memory budget (--gpu-memory-limit) blocks that do not fit stream from
  // host memory (models/offload.h); the plan made at load.
  const models::OffloadPlan& offload_plan() const { return plan_; }
  std::string placement() const override;
  void set_precision(models::Precision precision) override;
  models::Precision precision() const { return precision_; }
  const DitBlockWeights& block(int i) const { return blocks_.at(static_cast<size_t>(i)); }
  int64_t bytes_streamed() const { return streamer_ ? streamer_->bytes_streamed() : 0; }
  // The recorded forwards' counts (Backend::graphs), and how often a text's keys and values were
  // copied into a text slot.
  const GraphCache::Stats& graph_stats() const { return graphs_.stats(); }
  int64_t graph_text_copies() const { return graph_text_copies_; }
  // The most tokens a recorded forward has (default kGraphTokens); larger ones run op by op.
  void set_graph_tokens(int64_t most) { graph_tokens_ = most; }

  // The text embedding of `context` [L_txt <= text_len, text_dim] (host), zero-padded to
  // text_len as the official forward does; the padded rows are attended. Reused across steps.
  Tensor embed_text(const Tensor& context);
  // The same, and each block's cross-attention keys and values of it (they depend on the text
  // alone), so that the forwards do not project the text again in every block: 2 x text_len x dim
  // activations per block (A14B: 420 MB per prompt in bf16). Without them (a DiT that streams
  // blocks, or a backend under --gpu-memory-limit, whose activation reserve does not count them)
  // every forward projects the text in each block, as the official forward does.
  models::TextEmbedding embed_text(const models::TextContext& text) override;

  // One forward. `x` is the device latent [in_dim, F, H, W] (i2v: noise and y already
  // concatenated on channels), `t` the host timestep [1] or per token [1, L] / [L], `text` from
  // embed_text (the Tensor one: each block projects it). With a plan, blocks follow
  // plan->plan_for(step_open, block). `stack` keeps the block stack's residual or applies a given
  // one instead of running the blocks (MagCache); keeping it does not change the output. Returns
  // the device output [out_dim, F, H, W].
  Tensor forward(const Tensor& x, const Tensor& t, const Tensor& text,
                 const accel::FisPlan* plan = nullptr, bool step_open = true,
                 const ForwardObserver& observer = {}, const BlockStackResidual& stack = {});
  Tensor forward(const Tensor& x, const models::Timestep& time, const models::TextEmbedding& text,
                 const models::ForwardOptions& options) override;

 private:
  // Both forwards: `kv` the blocks' text keys and values (num_layers of them), or empty to
  // project `text` in each block.
  Tensor forward_blocks(const Tensor& x, const Tensor& t, const Tensor& text,
                        const std::vector<models::BlockText>& kv, const accel::FisPlan* plan,
                        bool step_open, const ForwardObserver& observer,
                        const BlockStackResidual& stack);
  // The host side of one forward, checked: the token grid, the distinct timesteps and the row
  // each token takes (empty: one row for all), each block's plan.
  struct StepPlan {
    int64_t gf = 0, gh = 0, gw = 0, tokens = 0;
    std::vector<float> unique_t;
    std::vector<int32_t> token_rows;
    std::vector<accel::BlockPlan> blocks;
    accel::FisConfig fis;
  };
  StepPlan step_plan(const Tensor& x, const Tensor& t, const Tensor& text,
                     const accel::FisPlan* plan, bool step_open) const;
  // The device side: from the timestep embedding (`sin_emb`, the sinusoids of s.unique_t) to the
  // velocity in `out`, reading only device tensors, so that a graph can record it as it is.
  void run_step(const StepPlan& s, const Tensor& x, const Tensor& sin_emb, const Tensor& token_rows,
                const Tensor& text, const std::vector<models::BlockText>& kv,
                const ForwardObserver& observer, const BlockStackResidual& stack, Tensor& out);
  Shape output_shape(const StepPlan& s) const;
  // Backend::graphs(): the forward recorded once per kind (GraphCache) and replayed; for
  // forwards of at most kGraphTokens tokens (small steps, where the launches weigh most; a
  // recording's own tensors come beside the pool's) with the blocks' text keys and values,
  // without observer, MagCache, streamed blocks or a memory limit (graph memory is outside the
  // pool the limit counts).
  static constexpr int64_t kGraphTokens = 16384;
  int64_t graph_tokens_ = kGraphTokens;
  bool graphable(const StepPlan& s, const std::vector<models::BlockText>& kv,
                 const ForwardObserver& observer, const BlockStackResidual& stack) const;
  Tensor forward_graphed(const StepPlan& s, const Tensor& x,
                         const std::vector<models::BlockText>& kv);
  // The text slot (graph_text_) holding `kv`'s contents, filled by copy when none does.
  size_t text_slot(const std::vector<models::BlockText>& kv);
  // Block `w`'s cross-attention keys (normed) and values of the embedded text.
  models::BlockText text_kv(const DitBlockWeights& w, const Tensor& text);
  void run_block(int index, Tensor& x, const Modulation& mod, const RopeGrid& grid,
                 const models::BlockText& kv);
  void run_block_sparse(int index, Tensor& x, const Modulation& mod, const RopeGrid& grid,
                        const models::BlockText& kv, const std::vector<int32_t>& anchors,
                        const accel::FisConfig& fis);
  void self_attention(const DitBlockWeights& w, const Tensor& x, const Modulation& mod,
                      const RopeGrid& grid, Tensor& out);
  void cross_attention(const DitBlockWeights& w, const Tensor& x, const models::BlockText& kv,
                       Tensor& out);
  void feed_forward(const DitBlockWeights& w, const Tensor& x, const Modulation& mod, Tensor& out);
  // Throws when this DiT cannot run in fp8 here; else sets precision_.
  void check_fp8(models::Precision precision);
  void quantize_block(DitBlockWeights& w);  // the matrices not already in w.fp8
  // The input of one or more block matrices: in fp8 quantized once (per token), however many
  // matrices read it (q, k and v read one).
  struct MatrixInput {
    Tensor x;
    Fp8Rows q;
  };
  MatrixInput matrix_input(const Tensor& x);
  // The same for LN(x) (Backend::layer_norm's arguments): in fp8 normalized and quantized in one
  // op (Backend::layer_norm_fp8), its activations never made.
  MatrixInput normed_input(const Tensor& x, const Tensor* weight = nullptr,
                           const Tensor* bias = nullptr, ModChunk shift = {}, ModChunk scale = {});
  // y = act(x . W^T + b) for matrix `m` of a block, in the model's precision.
  void linear(const DitBlockWeights& w, int m, const MatrixInput& in, const Tensor* b, Tensor& y,
              Activation act = Activation::None);
  Modulation gather_modulation(const Modulation& mod, const std::vector<int32_t>& frames,
                               int64_t tokens_per_frame);

  WanConfig cfg_;
  models::ModelInfo info_;
  Backend& backend_;
  Tensor patch_w_, patch_b_;
  Tensor text0_w_, text0_b_, text2_w_, text2_b_;
  Tensor time0_w_, time0_b_, time2_w_, time2_b_, proj_w_, proj_b_;
  Tensor head_mod_, head_w_, head_b_;
  std::vector<DitBlockWeights> blocks_;
  models::OffloadPlan plan_;
  std::unique_ptr<models::BlockStreamer> streamer_;  // when plan_ streams blocks
  bool literal_module_reconstruction_ = false;
  models::Precision precision_ = models::Precision::Default;
  // Unique to this DiT and its weights as they are now: a new one at construction and at each
  // set_precision that changes the weights. A TextEmbedding's block keys and values of another
  // revision (another model's, or older weights') are refused by forward.
  int weights_revision_ = 0;
  // Recorded forwards (Backend::graphs) and what they read: the text's keys and values copied into
  // a few slots, so a graph reads the same tensors whatever prompt's text comes (the cond and
  // uncond texts of guidance take one each and are copied once per prompt).
  struct TextSlot {
    std::vector<models::BlockText> kv;              // the copies the graphs read
    std::vector<std::weak_ptr<const void>> owners;  // whose contents they hold: the source
    std::vector<const void*> sources;               // tensors, while those live
    uint64_t used = 0;
  };
  GraphCache graphs_;
  std::vector<std::shared_ptr<TextSlot>> graph_text_;
  uint64_t graph_clock_ = 0;
  int64_t graph_text_copies_ = 0;
  int graphs_revision_ = 0;  // the weights_revision_ the graphs read
};

}  // namespace fisdit::wan
