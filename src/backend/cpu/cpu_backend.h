#pragma once
// The reference backend: fp32 host tensors, fp32 arithmetic with wider accumulation where the
// official code keeps more precision (RoPE in float64, norm statistics in double), OpenMP.
#include "backend/backend.h"

namespace fisdit {

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  Device device() const override { return Device::CPU; }
  std::string name() const override { return "cpu"; }

  Tensor empty(const Shape& shape, DType dtype) override;
  Tensor upload(const Tensor& host, DType dtype) override;
  Tensor download(const Tensor& t) override;
  // The bytes of the tensors this backend made (empty, upload), reported while a memory limit is
  // set, which then applies to them as a device's size would (Backend::MemoryBudget).
  int64_t memory_in_use() const override;
  int64_t memory_peak() const override;
  void reset_memory_peak() override;
  int64_t memory_free() const override;

 private:
  // The ops, arguments checked by Backend (backend.cpp).
  void do_copy(const Tensor& src, Tensor& dst) override;
  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                 Activation act) override;
  Fp8Rows do_quantize_rows(const Tensor& x) override;
  void do_linear_fp8(const Fp8Rows& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                     Activation act) override;
  void do_activation(const Tensor& x, Tensor& y, Activation act) override;
  void do_layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                     Tensor& y, ModChunk shift, ModChunk scale) override;
  void do_rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override;
  void do_rope_3d(Tensor& x, const RopeGrid& grid) override;
  void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;

  void do_attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& table,
                             const std::vector<int32_t>& bucket_of,
                             const std::vector<uint8_t>& key_valid, Tensor& out) override;
  void do_mul(Tensor& x, const Tensor& y) override;
  void do_add(Tensor& x, const Tensor& y, ModChunk gate) override;
  void do_mul_gate(Tensor& x, ModChunk gate) override;
  void do_add_scaled(Tensor& x, const Tensor& y, float alpha) override;
  void do_add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) override;
  void do_sub(const Tensor& a, const Tensor& b, Tensor& out) override;
  void do_add_row(const Tensor& a, const Tensor& row, Tensor& out) override;

  void do_gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                        int64_t tokens_per_frame, Tensor& dst) override;
  void do_interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                             int64_t tokens_per_frame, Tensor& dst, bool accumulate) override;
  void do_reconstruct_frames_delta(const Tensor& anchor_rows, const std::vector<int32_t>& anchors,
                                   int64_t tokens_per_frame, Tensor& x) override;

  void do_patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) override;
  void do_unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                     int64_t grid_h, int64_t grid_w, Tensor& out) override;

  void do_conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
                 Tensor& out) override;
  void do_channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) override;
  void do_upsample_nearest2x(const Tensor& x, Tensor& out) override;
  void do_frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;
  void do_copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst, int64_t dst_c,
                      int64_t dst_f, int64_t channels, int64_t frames) override;
  void do_fill_zero(Tensor& x) override;
  void do_batch_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols,
                          Tensor& out) override;
  void do_avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) override;
  void do_dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) override;
  void do_space_to_channels2(const Tensor& x, Tensor& out, bool inverse) override;
  void do_pad_replicate(const Tensor& x, int front, int side, Tensor& out) override;
  void do_space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) override;
  void do_channel_group_mean(const Tensor& x, int groups, Tensor& out) override;
  void do_channel_repeat(const Tensor& x, int repeats, Tensor& out) override;
  void do_causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                 Tensor& out) override;
  void do_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;

  // Counts `t` as held by the backend until its last view dies; past the limit, throws as running
  // out of GPU memory does.
  Tensor tracked(Tensor t, const char* op);
  struct Held;
  std::shared_ptr<Held> held_;
};

namespace cpu {
// Throws fisdit::Error "<op>: <what>" when `ok` is false.
void require(bool ok, const char* op, const std::string& what);
// Row pointer into a Modulation chunk for token `token` (nullptr when no modulation is given).
const float* mod_row(const ModChunk& m, int64_t token);
// The row indices of a modulation chunk are rows of its table (its shapes are checked by Backend;
// the values only here, where they can be read).
void check_mod_rows(const ModChunk& m, int64_t tokens, const char* op);
float apply_activation(float v, Activation act);
}  // namespace cpu

}  // namespace fisdit
