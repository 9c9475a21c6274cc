// The backend-independent half of every op: its argument checks, written once here for all
// backends. Each public op of Backend checks what does not depend on the device (tensors defined,
// shapes and counts that agree, F32 where the contract says so, frame lists in range, anchors
// sorted with both ends), then calls the backend's do_<op>, which checks only what is its own
// (tensors on its device, the dtypes its kernels take, its size limits).
#include "backend/backend.h"

#include <algorithm>
#include <initializer_list>

#include "fisdit/error.h"

namespace fisdit {

// ---------------------------------------------------------------- check helpers
namespace {

// Throws fisdit::Error "<op>: <what>".
[[noreturn]] void fail(const char* op, const std::string& what) {
  throw Error(std::string(op) + ": " + what);
}
void require(bool ok, const char* op, const std::string& what) {
  if (!ok) fail(op, what);
}

std::string desc(const Tensor& t) {
  return shape_str(t.shape()) + " " + std::string(dtype_name(t.dtype()));
}
std::string num(int64_t v) { return std::to_string(v); }

struct Arg {
  const Tensor& t;
  const char* name;
};
// Every tensor an op reads or writes must exist...
void need(const char* op, std::initializer_list<Arg> args) {
  for (const Arg& a : args)
    if (!a.t.defined()) fail(op, std::string(a.name) + " is undefined");
}
// ...and be F32 where the op's contract says so (the residual stream, the VAE's parameters).
void need_f32(const char* op, std::initializer_list<Arg> args) {
  need(op, args);
  for (const Arg& a : args)
    if (a.t.dtype() != DType::F32) fail(op, std::string(a.name) + " " + desc(a.t) + " must be F32");
}

// A modulation chunk for `tokens` rows of `dim` channels. The row indices' values are checked by
// the backend that can read them.
void check_mod(const ModChunk& m, int64_t tokens, int64_t dim, const char* op) {
  if (!m.mod) return;
  const Tensor& table = m.mod->table;
  need(op, {{table, "modulation table"}});
  require(table.dtype() == DType::F32 && table.ndim() == 3 && table.dim(2) == dim, op,
          "modulation table " + desc(table) + " does not match channels " + num(dim));
  require(m.chunk >= 0 && m.chunk < table.dim(1), op, "modulation chunk out of range");
  const Tensor& rows = m.mod->token_rows;
  if (rows.defined())
    require(
        rows.dtype() == DType::I32 && rows.numel() == tokens, op,
        "modulation row index " + desc(rows) + " does not have " + num(tokens) + " I32 entries");
}

void check_grid(const RopeGrid& grid, const Tensor& x, int64_t tokens, int64_t head_dim,
                const char* op) {
  require(grid.tokens() == tokens, op,
          "grid has " + num(grid.tokens()) + " tokens, tensor " + desc(x));
  for (int32_t f : grid.frames) require(f >= 0, op, "negative frame index");
  const auto& a = grid.axis_pairs;
  if (a[0] != 0 || a[1] != 0 || a[2] != 0)
    require(a[0] >= 0 && a[1] >= 0 && a[2] >= 0 && 2 * (a[0] + a[1] + a[2]) == head_dim, op,
            "axis pairs " + num(a[0]) + "/" + num(a[1]) + "/" + num(a[2]) +
                " do not cover head_dim " + num(head_dim));
  require(grid.theta > 1.0, op, "theta must be > 1");
}

// The anchor-frame arguments of interpolate_frames and reconstruct_frames_delta: `rows` holds one
// frame of `tokens_per_frame` rows per anchor, `full` every frame of the sequence; the anchors are
// strictly increasing and include its first and last frame.
void check_anchor_frames(const Tensor& rows, const char* rows_name,
                         const std::vector<int32_t>& anchors, int64_t tokens_per_frame,
                         const Tensor& full, const char* full_name, const char* op) {
  require(rows.ndim() == 2 && full.ndim() == 2 && rows.dim(1) == full.dim(1), op,
          "expects [rows, channels] tensors with equal channels, got " + desc(rows) + " and " +
              desc(full));
  const int64_t a = static_cast<int64_t>(anchors.size());
  require(tokens_per_frame > 0 && rows.dim(0) == a * tokens_per_frame, op,
          std::string(rows_name) + " rows " + desc(rows) + " do not match the anchor count " +
              num(a) + " (" + num(tokens_per_frame) + " tokens per frame)");
  require(full.dim(0) % tokens_per_frame == 0, op,
          std::string(full_name) + " rows " + desc(full) + " are not whole frames");
  const int64_t frames = full.dim(0) / tokens_per_frame;
  require(a >= 1 && anchors.front() == 0 && anchors.back() == frames - 1, op,
          "anchors must include the first and last frame (0 and " + num(frames - 1) + ")");
  for (int64_t i = 1; i < a; ++i)
    require(anchors[i] > anchors[i - 1], op, "anchors must be strictly increasing");
}

}  // namespace

std::array<int, 3> RopeGrid::pairs_for(int64_t head_dim) const {
  if (axis_pairs[0] != 0 || axis_pairs[1] != 0 || axis_pairs[2] != 0) return axis_pairs;
  const int c = static_cast<int>(head_dim / 2);
  return {c - 2 * (c / 3), c / 3, c / 3};
}

Shape conv3d_output_shape(const Shape& x, const Shape& w, const Conv3dParams& p) {
  const char* op = "conv3d";
  require(x.size() == 4 && w.size() == 5, op,
          "expects input [T, H, W, C] and weight [Cout, kt, kh, kw, Cin], got " + shape_str(x) +
              " and " + shape_str(w));
  require(w[4] == x[3], op, "input " + shape_str(x) + " does not match weight " + shape_str(w));
  require(p.stride_t > 0 && p.stride_h > 0 && p.stride_w > 0, op, "strides must be positive");
  require(p.pad_top >= 0 && p.pad_bottom >= 0 && p.pad_left >= 0 && p.pad_right >= 0, op,
          "padding must be >= 0");
  const int64_t ht = x[1] + p.pad_top + p.pad_bottom, wd = x[2] + p.pad_left + p.pad_right;
  require(x[0] >= w[1] && ht >= w[2] && wd >= w[3], op,
          "input " + shape_str(x) + " is smaller than the kernel " + shape_str(w));
  return {(x[0] - w[1]) / p.stride_t + 1, (ht - w[2]) / p.stride_h + 1,
          (wd - w[3]) / p.stride_w + 1, w[0]};
}

// ---------------------------------------------------------------- memory
void Backend::copy(const Tensor& src, Tensor& dst) {
  const char* op = "copy";
  need(op, {{src, "source"}, {dst, "destination"}});
  require(src.numel() == dst.numel() && src.dtype() == dst.dtype(), op,
          "source " + desc(src) + " and destination " + desc(dst) + " differ in size or dtype");
  do_copy(src, dst);
}

Tensor Backend::dequantize(const Tensor& stored, float scale, DType dtype) {
  const char* op = "dequantize";
  need(op, {{stored, "tensor"}});
  require(is_fp8(stored.dtype()), op, "takes an F8_E4M3 or F8_E5M2 tensor, not " + desc(stored));
  require(dtype == DType::F32 || dtype == DType::BF16, op,
          "gives F32 or BF16, not " + std::string(dtype_name(dtype)));
  return do_dequantize(stored, scale, dtype);
}

// ---------------------------------------------------------------- matrix ops, norms, rope
void Backend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                     Activation act) {
  const char* op = "linear";
  need(op, {{x, "input"}, {w, "weight"}, {y, "output"}});
  require(x.ndim() == 2 && w.ndim() == 2 && y.ndim() == 2, op,
          "expects 2-D tensors, got x " + desc(x) + ", w " + desc(w) + ", y " + desc(y));
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  require(w.dim(1) == k, op, "input " + desc(x) + " does not match weight " + desc(w));
  require(y.dim(0) == m && y.dim(1) == n, op,
          "output " + desc(y) + ", expected [" + num(m) + ", " + num(n) + "]");
  if (bias) {
    need(op, {{*bias, "bias"}});
    require(bias->numel() == n, op,
            "bias " + desc(*bias) + " does not match the " + num(n) + " weight rows");
  }
  do_linear(x, w, bias, y, act);
}

namespace {
// E4M3 rows: 2-D F8_E4M3 codes and one F32 scale per row.
void check_fp8_rows(const char* op, const Fp8Rows& q, const char* name) {
  const std::string n(name);
  if (!q.codes.defined() || !q.scales.defined()) fail(op, n + " codes or scales are undefined");
  require(q.codes.dtype() == DType::F8_E4M3 && q.codes.ndim() == 2, op,
          n + " codes " + desc(q.codes) + " must be 2-D F8_E4M3");
  require(q.scales.dtype() == DType::F32 && q.scales.numel() == q.codes.dim(0), op,
          n + " scales " + desc(q.scales) + " must be F32 with one per row");
}
}  // namespace

Fp8Rows Backend::quantize_rows(const Tensor& x) {
  const char* op = "quantize_rows";
  need(op, {{x, "input"}});
  require(x.ndim() == 2 && (x.dtype() == DType::F32 || x.dtype() == DType::BF16), op,
          "input " + desc(x) + " must be a 2-D F32 or BF16 tensor");
  return do_quantize_rows(x);
}

Fp8Rows Backend::do_quantize_rows(const Tensor& x) {
  const Fp8Rows host = quantize_rows_e4m3(x.device() == Device::CPU ? x : download(x));
  return {upload(host.codes, DType::F8_E4M3), upload(host.scales, DType::F32)};
}

void Backend::linear_fp8(const Fp8Rows& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                         Activation act) {
  const char* op = "linear_fp8";
  check_fp8_rows(op, x, "input");
  check_fp8_rows(op, w, "weight");
  need(op, {{y, "output"}});
  require(x.codes.dim(1) == w.codes.dim(1), op,
          "input " + desc(x.codes) + " does not match weight " + desc(w.codes));
  require(x.codes.dim(1) % 16 == 0, op,
          "input " + desc(x.codes) + ": the inner dimension must be a multiple of 16");
  require(y.ndim() == 2 && y.dim(0) == x.codes.dim(0) && y.dim(1) == w.codes.dim(0), op,
          "output " + desc(y) + ", expected [" + num(x.codes.dim(0)) + ", " + num(w.codes.dim(0)) +
              "]");
  if (bias) {
    need(op, {{*bias, "bias"}});
    require(bias->numel() == w.codes.dim(0), op,
            "bias " + desc(*bias) + " does not match the " + num(w.codes.dim(0)) + " weight rows");
  }
  do_linear_fp8(x, w, bias, y, act);
}

void Backend::linear_fp8(const Tensor& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                         Activation act) {
  need("linear_fp8", {{x, "input"}});
  linear_fp8(quantize_rows(x), w, bias, y, act);
}

void Backend::do_linear_fp8(const Fp8Rows&, const Fp8Rows&, const Tensor*, Tensor&, Activation) {
  throw Error(name() +
              " backend: --precision fp8 is not implemented on this backend yet (the cpu backend "
              "computes it, as the reference)");
}

void Backend::activation(const Tensor& x, Tensor& y, Activation act) {
  const char* op = "activation";
  need(op, {{x, "input"}, {y, "output"}});
  require(x.numel() == y.numel(), op,
          "input " + desc(x) + " and output " + desc(y) + " differ in size");
  do_activation(x, y, act);
}

namespace {
// The arguments of layer_norm and layer_norm_fp8 but the output.
void check_layer_norm(const char* op, const Tensor& x, const Tensor* weight, const Tensor* bias,
                      ModChunk shift, ModChunk scale) {
  need(op, {{x, "input"}});
  require(x.ndim() == 2, op, "input " + desc(x) + " must be 2-D");
  require(x.dtype() == DType::F32, op, "input " + desc(x) + " must be the F32 residual stream");
  const int64_t rows = x.dim(0), d = x.dim(1);
  if (weight) {
    need(op, {{*weight, "weight"}});
    require(weight->numel() == d, op, "weight size does not match channels");
  }
  if (bias) {
    need(op, {{*bias, "bias"}});
    require(bias->numel() == d, op, "bias size does not match channels");
  }
  require((shift.mod == nullptr) == (scale.mod == nullptr), op, "shift and scale come together");
  check_mod(shift, rows, d, op);
  check_mod(scale, rows, d, op);
}
}  // namespace

void Backend::layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                         Tensor& y, ModChunk shift, ModChunk scale) {
  const char* op = "layer_norm";
  need(op, {{x, "input"}, {y, "output"}});
  require(x.ndim() == 2 && x.shape() == y.shape(), op,
          "input " + desc(x) + " and output " + desc(y) + " must be equal 2-D shapes");
  check_layer_norm(op, x, weight, bias, shift, scale);
  do_layer_norm(x, weight, bias, eps, y, shift, scale);
}

Fp8Rows Backend::layer_norm_fp8(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                float eps, ModChunk shift, ModChunk scale) {
  check_layer_norm("layer_norm_fp8", x, weight, bias, shift, scale);
  return do_layer_norm_fp8(x, weight, bias, eps, shift, scale);
}

Fp8Rows Backend::do_layer_norm_fp8(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                   float eps, ModChunk shift, ModChunk scale) {
  Tensor y = empty(x.shape(), activation_dtype());
  do_layer_norm(x, weight, bias, eps, y, shift, scale);
  return do_quantize_rows(y);
}

void Backend::rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  const char* op = "rms_norm";
  need(op, {{x, "input"}, {weight, "weight"}, {y, "output"}});
  require(x.ndim() == 2 && x.shape() == y.shape(), op,
          "input " + desc(x) + " and output " + desc(y) + " must be equal 2-D shapes");
  const int64_t d = x.dim(1);
  require(weight.numel() == d, op, "weight " + desc(weight) + " does not match channels " + num(d));
  do_rms_norm(x, weight, eps, y);
}

void Backend::rope_3d(Tensor& x, const RopeGrid& grid) {
  const char* op = "rope_3d";
  need(op, {{x, "input"}});
  require(x.ndim() == 3, op, "expects [tokens, heads, head_dim], got " + desc(x));
  require(x.dim(2) % 2 == 0, op, "head_dim must be even");
  check_grid(grid, x, x.dim(0), x.dim(2), op);
  do_rope_3d(x, grid);
}

void Backend::rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                            const RopeGrid& grid) {
  const char* op = "rms_norm_rope";
  need(op, {{x, "input"}, {weight, "weight"}});
  require(
      x.ndim() == 2 && heads > 0 && x.dim(1) % heads == 0 && (x.dim(1) / heads) % 2 == 0, op,
      "expects [tokens, heads * even head_dim], got " + desc(x) + " for " + num(heads) + " heads");
  const int64_t d = x.dim(1);
  require(weight.numel() == d, op, "weight " + desc(weight) + " does not match channels " + num(d));
  check_grid(grid, x, x.dim(0), d / heads, op);
  do_rms_norm_rope(x, weight, eps, heads, grid);
}

namespace {
// The arguments of attention and attention_fp8: [tokens, heads, head_dim] q, k, v that agree and
// an output of q's shape; `granularity`: what head_dim must be a multiple of.
void check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                     const Tensor& out, int64_t granularity) {
  need(op, {{q, "q"}, {k, "k"}, {v, "v"}, {out, "out"}});
  const std::string qkv = "q " + desc(q) + ", k " + desc(k) + ", v " + desc(v);
  require(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, op,
          "expects [tokens, heads, head_dim] tensors, got " + qkv);
  require(k.dim(1) == q.dim(1) && k.dim(2) == q.dim(2) && v.shape() == k.shape(), op,
          qkv + ": shapes do not agree");
  require(q.dim(2) % granularity == 0, op,
          qkv + ": head_dim must be a multiple of " + num(granularity) +
              " (the FP8 tensor cores' granularity)");
  require(out.shape() == q.shape(), op, "output " + desc(out) + " must have q's shape");
  require(k.dim(0) > 0, op, "no keys");
}
}  // namespace

void Backend::attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  check_attention("attention", q, k, v, out, 1);
  do_attention(q, k, v, out);
}

void Backend::attention_fp8(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  check_attention("attention_fp8", q, k, v, out, 16);
  do_attention_fp8(q, k, v, out);
}

void Backend::causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const char* op = "causal_attention";
  need(op, {{q, "q"}, {k, "k"}, {v, "v"}, {out, "out"}});
  const std::string qkv = "q " + desc(q) + ", k " + desc(k) + ", v " + desc(v);
  require(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, op,
          "expects [tokens, heads, head_dim] tensors, got " + qkv);
  require(k.dim(0) == q.dim(0) && k.dim(2) == q.dim(2) && v.shape() == k.shape(), op,
          qkv +
              ": shapes do not agree (k and v [L, kv_heads, head_dim] beside q [L, heads, "
              "head_dim])");
  require(k.dim(1) > 0 && q.dim(1) % k.dim(1) == 0, op,
          qkv + ": the query heads must be a multiple of the key/value heads");
  require(out.shape() == q.shape(), op, "output " + desc(out) + " must have q's shape");
  do_causal_attention(q, k, v, out);
}

// k and v less their means over the keys (per channel) before rounding, v's mean added back:
// softmax(q (k - mean)^T) = softmax(q k^T) and P (v - mean) + mean = P v, but the centered values
// spend E4M3's range on what differs between tokens.
void Backend::do_attention_fp8(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const int64_t cols = q.dim(1) * q.dim(2);
  auto host = [&](const Tensor& t) { return t.device() == Device::CPU ? t : download(t); };
  const Tensor kh = host(k), vh = host(v);
  const Tensor vmean = column_means(vh, cols);
  const Tensor qr = upload(round_e4m3_per_tensor(host(q)), q.dtype());
  const Tensor kr =
      upload(round_e4m3_per_tensor(subtract_columns(kh, column_means(kh, cols))), k.dtype());
  const Tensor vr = upload(round_e4m3_per_tensor(subtract_columns(vh, vmean)), v.dtype());
  do_attention(qr, kr, vr, out);
  add_row(out, upload(vmean, DType::F32), out);
}

void Backend::attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& table, const std::vector<int32_t>& bucket_of,
                                 const std::vector<uint8_t>& key_valid, Tensor& out) {
  const char* op = "attention_rel_bias";
  need(op, {{q, "q"}, {k, "k"}, {v, "v"}, {table, "table"}, {out, "out"}});
  if (q.ndim() != 3 || k.shape() != q.shape() || v.shape() != q.shape() || out.shape() != q.shape())
    fail(op, "q, k, v and out must be the same [L, heads, head_dim], got " + shape_str(q.shape()) +
                 ", " + shape_str(k.shape()) + ", " + shape_str(v.shape()) + ", " +
                 shape_str(out.shape()));
  require(k.dtype() == q.dtype() && v.dtype() == q.dtype(), op, "q, k and v must share a dtype");
  const int64_t len = q.dim(0), heads = q.dim(1);
  require(table.ndim() == 2 && table.dim(1) == heads && table.dtype() == DType::F32, op,
          "table must be F32 [num_buckets, " + num(heads) + "], got " + desc(table));
  require(static_cast<int64_t>(bucket_of.size()) == std::max<int64_t>(2 * len - 1, 0) &&
              static_cast<int64_t>(key_valid.size()) == len,
          op,
          "need " + num(2 * len - 1) + " buckets and " + num(len) + " key flags, got " +
              num(static_cast<int64_t>(bucket_of.size())) + " and " +
              num(static_cast<int64_t>(key_valid.size())));
  for (int32_t b : bucket_of)
    if (b < 0 || b >= table.dim(0))
      fail(op, "bucket " + num(b) + " outside the table's " + num(table.dim(0)) + " rows");
  do_attention_rel_bias(q, k, v, table, bucket_of, key_valid, out);
}

// ---------------------------------------------------------------- elementwise
void Backend::mul(Tensor& x, const Tensor& y) {
  const char* op = "mul";
  need(op, {{x, "x"}, {y, "y"}});
  require(x.numel() == y.numel(), op, "shapes " + desc(x) + " and " + desc(y) + " differ");
  do_mul(x, y);
}

void Backend::add(Tensor& x, const Tensor& y, ModChunk gate) {
  const char* op = "add";
  need(op, {{x, "x"}, {y, "y"}});
  require(x.shape() == y.shape(), op, "shapes " + desc(x) + " and " + desc(y) + " differ");
  require(x.dtype() == DType::F32, op, "x " + desc(x) + " must be the F32 residual stream");
  const int64_t d = x.ndim() ? x.dim(-1) : 1, rows = d ? x.numel() / d : 0;
  check_mod(gate, rows, d, op);
  do_add(x, y, gate);
}

void Backend::mul_gate(Tensor& x, ModChunk gate) {
  const char* op = "mul_gate";
  need(op, {{x, "x"}});
  require(gate.mod != nullptr, op, "no gate given");
  require(x.ndim() >= 1, op, "x " + desc(x) + " has no channel dimension");
  const int64_t d = x.dim(-1), rows = d ? x.numel() / d : 0;
  check_mod(gate, rows, d, op);
  do_mul_gate(x, gate);
}

void Backend::add_scaled(Tensor& x, const Tensor& y, float alpha) {
  const char* op = "add_scaled";
  need(op, {{x, "x"}, {y, "y"}});
  require(x.shape() == y.shape(), op, "shapes " + desc(x) + " and " + desc(y) + " differ");
  do_add_scaled(x, y, alpha);
}

void Backend::add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) {
  const char* op = "add_low_rank";
  need_f32(op, {{w, "w"}, {up, "up"}, {down, "down"}});
  require(up.ndim() == 2 && down.ndim() == 2 && w.ndim() >= 1 && up.dim(1) == down.dim(0) &&
              w.dim(0) == up.dim(0) && w.numel() == up.dim(0) * down.dim(1),
          op, "w " + desc(w) + " is not up " + desc(up) + " @ down " + desc(down));
  do_add_low_rank(w, up, down, scale);
}

void Backend::sub(const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "sub";
  need(op, {{a, "a"}, {b, "b"}, {out, "out"}});
  require(a.shape() == b.shape() && a.shape() == out.shape(), op,
          "shapes " + desc(a) + ", " + desc(b) + ", " + desc(out) + " differ");
  do_sub(a, b, out);
}

void Backend::add_row(const Tensor& a, const Tensor& row, Tensor& out) {
  const char* op = "add_row";
  need(op, {{a, "a"}, {row, "row"}, {out, "out"}});
  require(a.shape() == out.shape(), op, "shapes " + desc(a) + " and " + desc(out) + " differ");
  const int64_t d = row.numel();
  require(d > 0 && a.numel() % d == 0, op, "row of " + num(d) + " does not tile " + desc(a));
  do_add_row(a, row, out);
}

// ---------------------------------------------------------------- frames
void Backend::gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                            int64_t tokens_per_frame, Tensor& dst) {
  const char* op = "gather_frames";
  need(op, {{src, "source"}, {dst, "destination"}});
  require(
      src.ndim() >= 1 && tokens_per_frame > 0 && src.dim(0) % tokens_per_frame == 0, op,
      "source rows " + desc(src) + " are not whole frames of " + num(tokens_per_frame) + " tokens");
  const int64_t num_frames = src.dim(0) / tokens_per_frame;
  const int64_t frame_bytes = static_cast<int64_t>(src.nbytes()) / (num_frames ? num_frames : 1);
  require(dst.dtype() == src.dtype() && static_cast<int64_t>(dst.nbytes()) ==
                                            frame_bytes * static_cast<int64_t>(frames.size()),
          op,
          "destination " + desc(dst) + " does not hold " +
              num(static_cast<int64_t>(frames.size())) + " frames of " + desc(src));
  for (int32_t f : frames)
    if (f < 0 || f >= num_frames)
      fail(op, "frame index " + num(f) + " out of range [0, " + num(num_frames) + ")");
  do_gather_frames(src, frames, tokens_per_frame, dst);
}

void Backend::interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                                 int64_t tokens_per_frame, Tensor& dst, bool accumulate) {
  const char* op = "interpolate_frames";
  need(op, {{src, "source"}});
  need_f32(op, {{dst, "destination"}});
  check_anchor_frames(src, "source", anchors, tokens_per_frame, dst, "destination", op);
  do_interpolate_frames(src, anchors, tokens_per_frame, dst, accumulate);
}

void Backend::reconstruct_frames_delta(const Tensor& anchor_rows,
                                       const std::vector<int32_t>& anchors,
                                       int64_t tokens_per_frame, Tensor& x) {
  const char* op = "reconstruct_frames_delta";
  need_f32(op, {{anchor_rows, "anchor rows"}, {x, "hidden state"}});
  check_anchor_frames(anchor_rows, "anchor", anchors, tokens_per_frame, x, "hidden state", op);
  do_reconstruct_frames_delta(anchor_rows, anchors, tokens_per_frame, x);
}

void Backend::patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) {
  const char* op = "patchify";
  need_f32(op, {{x, "input"}, {out, "output"}});
  require(x.ndim() == 4, op, "expects [C, F, H, W], got " + desc(x));
  const int64_t c = x.dim(0), f = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  require(pt > 0 && ph > 0 && pw > 0 && f % pt == 0 && h % ph == 0 && w % pw == 0, op,
          "latent " + desc(x) + " is not divisible by the patch size");
  const int64_t tokens = (f / pt) * (h / ph) * (w / pw), k = c * pt * ph * pw;
  require(out.ndim() == 2 && out.dim(0) == tokens && out.dim(1) == k, op,
          "output " + desc(out) + ", expected [" + num(tokens) + ", " + num(k) + "]");
  do_patchify(x, patch, out);
}

void Backend::unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                         int64_t grid_h, int64_t grid_w, Tensor& out) {
  const char* op = "unpatchify";
  need_f32(op, {{x, "input"}, {out, "output"}});
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  require(pt > 0 && ph > 0 && pw > 0, op, "patch sizes must be positive");
  require(x.ndim() == 2 && x.dim(0) == grid_f * grid_h * grid_w && x.dim(1) % (pt * ph * pw) == 0,
          op, "input " + desc(x) + " does not match the token grid");
  const int64_t c = x.dim(1) / (pt * ph * pw);
  const Shape expect{c, grid_f * pt, grid_h * ph, grid_w * pw};
  require(out.shape() == expect, op, "output " + desc(out) + ", expected " + shape_str(expect));
  do_unpatchify(x, patch, grid_f, grid_h, grid_w, out);
}

// ---------------------------------------------------------------- video VAE ops
void Backend::set_video_dtype(DType dtype) {
  if (dtype != DType::F32)
    throw Error("the " + name() + " backend runs the VAE in fp32 only, not " +
                std::string(dtype_name(dtype)));
  video_dtype_ = dtype;
}

void Backend::set_video_precision(const std::string& precision) {
  if (precision.empty()) return;
  if (precision != "bf16" && precision != "fp32")
    throw Error("--vae-precision: must be bf16 or fp32, got '" + precision + "'");
  try {
    set_video_dtype(precision == "bf16" ? DType::BF16 : DType::F32);
  } catch (const Error& e) {
    throw Error("--vae-precision " + precision + ": " + e.what());
  }
}

namespace {
// The video tensors of one op: defined, F32 or BF16, one dtype; the parameters (bias, gamma): F32.
void need_video(const char* op, std::initializer_list<Arg> args) {
  need(op, args);
  const DType dt = args.begin()->t.dtype();
  for (const Arg& a : args) {
    if (a.t.dtype() != DType::F32 && a.t.dtype() != DType::BF16)
      fail(op, std::string(a.name) + " " + desc(a.t) + " must be F32 or BF16");
    if (a.t.dtype() != dt)
      fail(op, std::string(a.name) + " " + desc(a.t) + " must have the dtype of " +
                   args.begin()->name + " (" + std::string(dtype_name(dt)) + ")");
  }
}
// [T, H, W, C] with the same shape except the channels.
bool same_pixels(const Tensor& a, const Tensor& b) {
  return a.ndim() == b.ndim() && a.ndim() >= 1 &&
         Shape(a.shape().begin(), a.shape().end() - 1) ==
             Shape(b.shape().begin(), b.shape().end() - 1);
}
}  // namespace

void Backend::conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
                     Tensor& out) {
  const char* op = "conv3d";
  need_video(op, {{x, "input"}, {w, "weight"}, {out, "output"}});
  const Shape os = conv3d_output_shape(x.shape(), w.shape(), p);
  require(out.shape() == os, op, "output " + desc(out) + ", expected " + shape_str(os));
  if (bias) {
    need_f32(op, {{*bias, "bias"}});
    require(bias->numel() == os[3], op, "bias size does not match weight rows");
  }
  // Each output value sums kt x kh x kw x Cin products (zero padding included).
  flops_.conv += 2.0 * static_cast<double>(out.numel()) * static_cast<double>(w.numel() / w.dim(0));
  do_conv3d(x, w, bias, p, out);
}

void Backend::channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) {
  const char* op = "channel_rms_norm";
  need_video(op, {{x, "input"}, {out, "output"}});
  need_f32(op, {{gamma, "gamma"}});
  require(x.ndim() >= 2 && out.shape() == x.shape(), op,
          "bad input " + desc(x) + " / output " + desc(out));
  const int64_t c = x.dim(-1);
  require(gamma.numel() == c, op,
          "gamma has " + num(gamma.numel()) + " values for " + num(c) + " channels");
  do_channel_rms_norm(x, gamma, silu, out);
}

void Backend::upsample_nearest2x(const Tensor& x, Tensor& out) {
  const char* op = "upsample_nearest2x";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(x.ndim() == 4, op, "expects [T, H, W, C], got " + desc(x));
  require(out.shape() == Shape{x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3)}, op,
          "output " + desc(out) + " is not twice " + desc(x));
  do_upsample_nearest2x(x, out);
}

void Backend::frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const char* op = "frame_attention";
  need_video(op, {{q, "q"}, {k, "k"}, {v, "v"}, {out, "output"}});
  require(
      q.ndim() == 4 && k.shape() == q.shape() && v.shape() == q.shape() && out.shape() == q.shape(),
      op, "q, k, v and out must be the same [T, H, W, C], got " + desc(q));
  const double pixels = static_cast<double>(q.dim(1) * q.dim(2));  // per frame: QK^T and PV
  flops_.attention +=
      4.0 * static_cast<double>(q.dim(0)) * pixels * pixels * static_cast<double>(q.dim(3));
  do_frame_attention(q, k, v, out);
}

void Backend::copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst,
                          int64_t dst_c, int64_t dst_f, int64_t channels, int64_t frames) {
  const char* op = "copy_frames";
  need_video(op, {{src, "source"}, {dst, "destination"}});
  require(src.ndim() >= 2 && dst.ndim() == src.ndim(), op,
          "expects [T, ..., C] tensors, got " + desc(src) + " and " + desc(dst));
  for (int i = 1; i + 1 < src.ndim(); ++i)
    require(src.dim(i) == dst.dim(i), op, "frame sizes differ: " + desc(src) + " and " + desc(dst));
  require(channels >= 0 && frames >= 0 && src_c >= 0 && dst_c >= 0 && src_f >= 0 && dst_f >= 0 &&
              src_c + channels <= src.dim(-1) && dst_c + channels <= dst.dim(-1) &&
              src_f + frames <= src.dim(0) && dst_f + frames <= dst.dim(0),
          op,
          "block out of range: " + num(channels) + " channels x " + num(frames) + " frames of " +
              desc(src) + " -> " + desc(dst));
  do_copy_frames(src, src_c, src_f, dst, dst_c, dst_f, channels, frames);
}

void Backend::fill_zero(Tensor& x) {
  need("fill_zero", {{x, "tensor"}});
  do_fill_zero(x);
}

void Backend::batch_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols,
                              Tensor& out) {
  const char* op = "batch_transpose";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(batch >= 0 && rows >= 0 && cols >= 0 && x.numel() == batch * rows * cols &&
              out.numel() == x.numel(),
          op,
          "cannot read " + desc(x) + " as [" + num(batch) + ", " + num(rows) + ", " + num(cols) +
              "] into " + desc(out));
  if (x.numel()) do_batch_transpose(x, batch, rows, cols, out);
}

Tensor conv_weight_channels_last(Backend& backend, const Tensor& w) {
  if (w.ndim() < 3) throw Error("conv weight " + desc(w) + " must be [Cout, Cin, k...]");
  const int64_t cout = w.dim(0), cin = w.dim(1),
                taps = w.numel() / std::max<int64_t>(cout * cin, 1);
  Shape shape(w.shape().begin() + 2, w.shape().end());
  shape.insert(shape.begin(), cout);
  shape.push_back(cin);
  const Tensor f = backend.upload(w, DType::F32);  // as is where it is already F32 on the backend
  Tensor out = backend.empty(shape, DType::F32);
  backend.batch_transpose(f, cout, cin, taps, out);
  return backend.upload(out, backend.video_dtype());
}

void Backend::avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) {
  const char* op = "avg_down3d";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(x.ndim() == 4 && out.ndim() == 4 && ft > 0 && fs > 0, op,
          "expects [T, H, W, C] tensors, got " + desc(x));
  const int64_t t = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), out_c = out.dim(3);
  const int64_t pad = (ft - t % ft) % ft, factor = int64_t{ft} * fs * fs;
  require(h % fs == 0 && w % fs == 0 && out_c > 0 && c * factor % out_c == 0 &&
              out.shape() == Shape{(t + pad) / ft, h / fs, w / fs, out_c},
          op, "cannot reduce " + desc(x) + " to " + desc(out));
  do_avg_down3d(x, ft, fs, out);
}

void Backend::dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) {
  const char* op = "dup_up3d";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(x.ndim() == 4 && out.ndim() == 4 && ft > 0 && fs > 0 && skip >= 0, op,
          "expects [T, H, W, C] tensors, got " + desc(x));
  const int64_t t = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), out_c = out.dim(3);
  const int64_t factor = int64_t{ft} * fs * fs;
  require(out_c * factor % c == 0 && out.shape() == Shape{t * ft - skip, h * fs, w * fs, out_c}, op,
          "cannot expand " + desc(x) + " to " + desc(out));
  do_dup_up3d(x, ft, fs, skip, out);
}

void Backend::space_to_channels2(const Tensor& x, Tensor& out, bool inverse) {
  const char* op = "space_to_channels2";
  need_video(op, {{x, "input"}, {out, "output"}});
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  require(big.ndim() == 4 && big.dim(1) % 2 == 0 && big.dim(2) % 2 == 0 &&
              small.shape() == Shape{big.dim(0), big.dim(1) / 2, big.dim(2) / 2, 4 * big.dim(3)},
          op, "cannot map " + desc(x) + " to " + desc(out));
  do_space_to_channels2(x, out, inverse);
}

void Backend::pad_replicate(const Tensor& x, int front, int side, Tensor& out) {
  const char* op = "pad_replicate";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(front >= 0 && side >= 0, op, "padding must be >= 0");
  require(x.ndim() == 4 && x.dim(0) > 0 && x.dim(1) > 0 && x.dim(2) > 0 &&
              out.shape() ==
                  Shape{x.dim(0) + front, x.dim(1) + 2 * side, x.dim(2) + 2 * side, x.dim(3)},
          op, "cannot pad " + desc(x) + " to " + desc(out));
  do_pad_replicate(x, front, side, out);
}

void Backend::space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) {
  const char* op = "space_to_channels";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(rt == 1 || rt == 2, op, "the time factor must be 1 or 2");
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  require(big.ndim() == 4 && big.dim(0) % rt == 0 && big.dim(1) % 2 == 0 && big.dim(2) % 2 == 0 &&
              small.shape() ==
                  Shape{big.dim(0) / rt, big.dim(1) / 2, big.dim(2) / 2, 4 * rt * big.dim(3)},
          op, "cannot map " + desc(x) + " to " + desc(out) + " with time factor " + num(rt));
  do_space_to_channels(x, rt, out, inverse);
}

void Backend::channel_group_mean(const Tensor& x, int groups, Tensor& out) {
  const char* op = "channel_group_mean";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(groups >= 1 && same_pixels(x, out) && x.dim(-1) == out.dim(-1) * groups, op,
          "cannot average " + desc(x) + " in groups of " + num(groups) + " to " + desc(out));
  do_channel_group_mean(x, groups, out);
}

void Backend::channel_repeat(const Tensor& x, int repeats, Tensor& out) {
  const char* op = "channel_repeat";
  need_video(op, {{x, "input"}, {out, "output"}});
  require(repeats >= 1 && same_pixels(x, out) && out.dim(-1) == x.dim(-1) * repeats, op,
          "cannot repeat " + desc(x) + " " + num(repeats) + " times to " + desc(out));
  do_channel_repeat(x, repeats, out);
}

void Backend::causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                     Tensor& out) {
  const char* op = "causal_video_attention";
  need_video(op, {{q, "q"}, {k, "k"}, {v, "v"}, {out, "output"}});
  require(
      q.ndim() == 4 && k.shape() == q.shape() && v.shape() == q.shape() && out.shape() == q.shape(),
      op, "q, k, v and out must be the same [T, H, W, C], got " + desc(q));
  // Frame t's queries see frames 0..t: T (T + 1) / 2 frame pairs of QK^T and PV.
  const double frames = static_cast<double>(q.dim(0)),
               pixels = static_cast<double>(q.dim(1) * q.dim(2));
  flops_.attention +=
      4.0 * frames * (frames + 1) / 2.0 * pixels * pixels * static_cast<double>(q.dim(3));
  do_causal_video_attention(q, k, v, out);
}

}  // namespace fisdit
