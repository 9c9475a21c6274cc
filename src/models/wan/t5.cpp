#include "models/wan/t5.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "fisdit/error.h"
#include "io/weights.h"
#include "models/weights.h"

namespace fisdit::wan {

void T5Config::validate(const std::string& where) const {
  auto fail = [&](const std::string& what) { throw Error(where + ": T5 config: " + what); };
  if (vocab <= 0 || dim <= 0 || dim_attn <= 0 || dim_ffn <= 0 || num_heads <= 0 ||
      num_layers <= 0 || num_buckets <= 0 || max_dist <= 0)
    fail(
        "vocab, dim, dim_attn, dim_ffn, num_heads, num_layers, num_buckets and max_dist must be "
        "positive");
  if (dim_attn % num_heads != 0)
    fail("dim_attn " + std::to_string(dim_attn) + " is not divisible by num_heads " +
         std::to_string(num_heads));
  // Bidirectional buckets: half per direction, of which half are exact (max_exact >= 1).
  if (num_buckets < 4 || num_buckets % 2 != 0)
    fail("num_buckets must be even and >= 4, got " + std::to_string(num_buckets));
  if (max_dist <= num_buckets / 4)
    fail("max_dist " + std::to_string(max_dist) + " must exceed the exact range " +
         std::to_string(num_buckets / 4));
  if (!(eps > 0)) fail("eps must be positive");
}

int t5_relative_bucket(int64_t relative_position, int num_buckets, int max_dist) {
  // T5RelativeEmbedding._relative_position_bucket (bidirectional). Its log branch is float32 and
  // lands on exact integers at distances 16, 32, 64, 128 before .long() truncates, so it takes
  // the same float32 steps here, not double.
  const int half = num_buckets / 2;
  int bucket = relative_position > 0 ? half : 0;
  const int64_t distance = relative_position < 0 ? -relative_position : relative_position;
  const int max_exact = half / 2;
  if (distance < max_exact) return bucket + static_cast<int>(distance);
  const float ratio = static_cast<float>(distance) / static_cast<float>(max_exact);
  const float log_range =
      static_cast<float>(std::log(static_cast<double>(max_dist) / static_cast<double>(max_exact)));
  const float scaled = std::log(ratio) / log_range * static_cast<float>(half - max_exact);
  const int64_t large = max_exact + static_cast<int64_t>(scaled);
  return bucket + static_cast<int>(std::min<int64_t>(large, half - 1));
}

std::vector<std::pair<std::string, Shape>> t5_parameter_shapes(const T5Config& c) {
  const int64_t d = c.dim, da = c.dim_attn, f = c.dim_ffn;
  std::vector<std::pair<std::string, Shape>> s = {{"token_embedding.weight", {c.vocab, d}}};
  if (c.shared_pos) s.push_back({"pos_embedding.embedding.weight", {c.num_buckets, c.num_heads}});
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    s.push_back({b + "norm1.weight", {d}});
    s.push_back({b + "attn.q.weight", {da, d}});
    s.push_back({b + "attn.k.weight", {da, d}});
    s.push_back({b + "attn.v.weight", {da, d}});
    s.push_back({b + "attn.o.weight", {d, da}});
    s.push_back({b + "norm2.weight", {d}});
    s.push_back({b + "ffn.gate.0.weight", {f, d}});
    s.push_back({b + "ffn.fc1.weight", {f, d}});
    s.push_back({b + "ffn.fc2.weight", {d, f}});
    if (!c.shared_pos)
      s.push_back({b + "pos_embedding.embedding.weight", {c.num_buckets, c.num_heads}});
  }
  s.push_back({"norm.weight", {d}});
  return s;
}

int64_t t5_streamed_bytes(const T5Config& c, DType weight_dtype, int64_t text_len, int sequences) {
  const int64_t w = static_cast<int64_t>(dtype_size(weight_dtype)), f32 = 4;
  const int64_t d = c.dim, da = c.dim_attn, f = c.dim_ffn, len = text_len;
  const int64_t block =
      (4 * da * d + 3 * f * d) * w + (2 * d + int64_t{c.num_buckets} * c.num_heads) * f32;
  // x, branch, xn and the output [L, dim]; q, k, v, attn [L, dim_attn]; gate, hidden [L, dim_ffn].
  const int64_t sequence =
      (4 * len * d + 4 * len * da + 2 * len * f + int64_t{c.num_heads} * len * len) * f32;
  return block + sequences * sequence;
}

// Parameters of one block in their stored dtype (converted to fp32 only while the block runs).
struct T5Encoder::BlockWeights {
  T5Weight norm1, q, k, v, o, norm2, gate, fc1, fc2, pos;  // pos: [num_buckets, num_heads] or none
};

namespace {

// Throws naming the position when an id is outside [0, vocab) or a mask value is not 0/1.
void check_tokens(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask, int vocab) {
  if (ids.empty()) throw Error("text encoder: no tokens");
  if (mask.size() != ids.size())
    throw Error("text encoder: " + std::to_string(ids.size()) + " token ids but " +
                std::to_string(mask.size()) + " mask values");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      throw Error("text encoder: token id " + std::to_string(ids[i]) + " at position " +
                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(vocab) +
                  ")");
    if (mask[i] != 0 && mask[i] != 1)
      throw Error("text encoder: mask value " + std::to_string(mask[i]) + " at position " +
                  std::to_string(i) + " is not 0 or 1");
  }
}

// sum(mask) (seq_lens = mask.gt(0).sum()), and whether the mask is a prefix: ones, then padding,
// as the tokenizer makes it. Throws when the mask selects no token.
struct MaskPrefix {
  int64_t valid = 0;
  bool prefix = false;
};
MaskPrefix mask_prefix(const std::vector<int64_t>& mask) {
  MaskPrefix m;
  for (int64_t v : mask) m.valid += v > 0;
  if (m.valid == 0) throw Error("text encoder: the mask selects no token");
  m.prefix = std::all_of(mask.begin(), mask.begin() + m.valid, [](int64_t v) { return v == 1; }) &&
             std::all_of(mask.begin() + m.valid, mask.end(), [](int64_t v) { return v == 0; });
  return m;
}

}  // namespace

T5Encoder::T5Encoder(T5Config cfg, Backend& backend, const T5WeightFn& weights)
    : cfg_(std::move(cfg)), backend_(backend) {
  cfg_.validate("text encoder");
  const auto shapes = t5_parameter_shapes(cfg_);
  const std::map<std::string, Shape> shape_of(shapes.begin(), shapes.end());
  auto load = [&](const std::string& name) {
    T5Weight w = weights(name, shape_of.at(name));
    if (!is_float(w.stored.dtype()) || w.stored.device() != Device::CPU)
      throw Error("text encoder weight '" + name + "' must be a host float tensor, got " +
                  std::string(dtype_name(w.stored.dtype())));
    if (!std::isfinite(w.scale))
      throw Error("text encoder weight '" + name + "' has a non-finite scale");
    return w;
  };
  token_embedding_ = load("token_embedding.weight");
  if (cfg_.shared_pos) shared_pos_ = load("pos_embedding.embedding.weight");
  blocks_.resize(static_cast<size_t>(cfg_.num_layers));
  for (int i = 0; i < cfg_.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    BlockWeights& w = blocks_[static_cast<size_t>(i)];
    w.norm1 = load(b + "norm1.weight");
    w.q = load(b + "attn.q.weight");
    w.k = load(b + "attn.k.weight");
    w.v = load(b + "attn.v.weight");
    w.o = load(b + "attn.o.weight");
    w.norm2 = load(b + "norm2.weight");
    w.gate = load(b + "ffn.gate.0.weight");
    w.fc1 = load(b + "ffn.fc1.weight");
    w.fc2 = load(b + "ffn.fc2.weight");
    if (!cfg_.shared_pos) w.pos = load(b + "pos_embedding.embedding.weight");
  }
  final_norm_ = load("norm.weight");
}

int64_t T5Encoder::DeviceBlock::bytes() const {
  int64_t n = 0;
  for (const Tensor* t : {&norm1, &wq, &wk, &wv, &wo, &table, &norm2, &wg, &w1, &w2})
    if (t->defined()) n += static_cast<int64_t>(t->nbytes());
  return n;
}

T5Encoder::~T5Encoder() = default;

void T5Encoder::set_resident(bool resident) {
  resident_ = resident;
  if (!resident) {
    on_device_.clear();
    shared_table_ = Tensor();
    final_norm_device_ = Tensor();
  }
}

int64_t T5Encoder::resident_bytes() const {
  int64_t n = 0;
  for (const DeviceBlock& b : on_device_) n += b.bytes();
  for (const Tensor* t : {&shared_table_, &final_norm_device_})
    if (t->defined()) n += static_cast<int64_t>(t->nbytes());
  return n;
}

Tensor T5Encoder::upload_vector(const T5Weight& w) {
  return models::upload_weight(w.stored, w.scale, backend_, DType::F32);
}

T5Encoder::DeviceBlock T5Encoder::upload_block(int index) {
  const auto matrix = [&](const T5Weight& w) {
    return models::upload_weight(w.stored, w.scale, backend_, backend_.weight_dtype());
  };
  const auto vec = [&](const T5Weight& w) { return upload_vector(w); };
  const BlockWeights& s = blocks_[static_cast<size_t>(index)];
  DeviceBlock b;
  b.norm1 = vec(s.norm1);
  b.wq = matrix(s.q);
  b.wk = matrix(s.k);
  b.wv = matrix(s.v);
  b.wo = matrix(s.o);
  if (!cfg_.shared_pos) b.table = vec(s.pos);
  b.norm2 = vec(s.norm2);
  b.wg = matrix(s.gate);
  b.w1 = matrix(s.fc1);
  b.w2 = matrix(s.fc2);
  return b;
}

Tensor T5Encoder::forward(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask,
                          const T5Observer& observer) {
  return run({{&ids, &mask}}, observer).front();
}

std::vector<Tensor> T5Encoder::forward_many(const std::vector<T5Input>& inputs) {
  std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>> seqs;
  for (const T5Input& in : inputs) seqs.push_back({&in.ids, &in.mask});
  return run(seqs, {});
}

std::vector<Tensor> T5Encoder::run(
    const std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>>& seqs,
    const T5Observer& observer) {
  if (seqs.empty()) return {};
  for (const auto& [ids, mask] : seqs) check_tokens(*ids, *mask, cfg_.vocab);
  const int64_t d = cfg_.dim, da = cfg_.dim_attn, heads = cfg_.num_heads, hd = cfg_.head_dim();
  const float eps = static_cast<float>(cfg_.eps);
  Backend& be = backend_;
  const DType act = be.activation_dtype();

  // Per sequence: its residual stream, position buckets, key mask and scratch buffers.
  struct State {
    int64_t len = 0;
    std::vector<int32_t> bucket_of;
    std::vector<uint8_t> key_valid;
    Tensor x, xn, branch, q, k, v, attn, gate, hidden;
  };
  std::vector<State> st(seqs.size());
  for (size_t n = 0; n < seqs.size(); ++n) {
    const std::vector<int64_t>& ids = *seqs[n].first;
    const std::vector<int64_t>& mask = *seqs[n].second;
    State& S = st[n];
    const int64_t len = S.len = static_cast<int64_t>(ids.size());
    // token_embedding(ids): gather the rows, converting from the stored dtype.
    Tensor x_host = Tensor::zeros({len, d});
    const Tensor& table = token_embedding_.stored;
    const size_t row_bytes = static_cast<size_t>(d) * dtype_size(table.dtype());
    const auto* base = static_cast<const uint8_t*>(table.raw());
    for (int64_t i = 0; i < len; ++i)
      convert_to_f32(table.dtype(),
                     base + static_cast<size_t>(ids[static_cast<size_t>(i)]) * row_bytes,
                     x_host.f32() + i * d, static_cast<size_t>(d));
    if (token_embedding_.scale != 1.0f)
      for (int64_t i = 0; i < len * d; ++i) x_host.f32()[i] *= token_embedding_.scale;
    if (observer) observer("embedding", x_host.clone());
    // Buckets depend on j - i only; one table of 2L - 1 entries serves every layer.
    S.bucket_of.resize(static_cast<size_t>(2 * len - 1));
    for (int64_t r = -(len - 1); r <= len - 1; ++r)
      S.bucket_of[static_cast<size_t>(r + len - 1)] =
          t5_relative_bucket(r, cfg_.num_buckets, cfg_.max_dist);
    S.key_valid.resize(static_cast<size_t>(len));
    for (int64_t j = 0; j < len; ++j)
      S.key_valid[static_cast<size_t>(j)] = mask[static_cast<size_t>(j)] != 0;
    S.x = be.upload(x_host, DType::F32);
    S.xn = be.empty({len, d}, act);
    S.branch = be.empty({len, d}, DType::F32);
    S.q = be.empty({len, da}, act);
    S.k = be.empty({len, da}, act);
    S.v = be.empty({len, da}, act);
    S.attn = be.empty({len, da}, act);
    S.gate = be.empty({len, cfg_.dim_ffn}, act);
    S.hidden = be.empty({len, cfg_.dim_ffn}, act);
  }

  // One block's weights on the backend at a time, once for all the sequences (a GPU holds one
  // block of the 5.7B-parameter encoder), or every block kept there (set_resident).
  const Tensor shared_table = !cfg_.shared_pos          ? Tensor()
                              : shared_table_.defined() ? shared_table_
                                                        : upload_vector(shared_pos_);
  if (resident_) shared_table_ = shared_table;

  for (int i = 0; i < cfg_.num_layers; ++i) {
    DeviceBlock streamed;
    if (!resident_ || static_cast<size_t>(i) >= on_device_.size()) streamed = upload_block(i);
    if (resident_ && static_cast<size_t>(i) >= on_device_.size())
      on_device_.push_back(std::move(streamed));
    const DeviceBlock& w = resident_ ? on_device_[static_cast<size_t>(i)] : streamed;
    const Tensor& table = cfg_.shared_pos ? shared_table : w.table;
    // T5SelfAttention.forward: x += attn(norm1(x), mask, pos_bias); x += ffn(norm2(x)).
    for (State& S : st) {
      const int64_t len = S.len;
      be.rms_norm(S.x, w.norm1, eps, S.xn);
      be.linear(S.xn, w.wq, nullptr, S.q);
      be.linear(S.xn, w.wk, nullptr, S.k);
      be.linear(S.xn, w.wv, nullptr, S.v);
      Tensor attn3 = S.attn.reshape({len, heads, hd});
      be.attention_rel_bias(S.q.reshape({len, heads, hd}), S.k.reshape({len, heads, hd}),
                            S.v.reshape({len, heads, hd}), table, S.bucket_of, S.key_valid, attn3);
      be.linear(S.attn, w.wo, nullptr, S.branch);
      be.add(S.x, S.branch);
    }
    for (State& S : st) {
      be.rms_norm(S.x, w.norm2, eps, S.xn);
      be.linear(S.xn, w.wg, nullptr, S.gate, Activation::GeluTanh);
      be.linear(S.xn, w.w1, nullptr, S.hidden);
      be.mul(S.hidden, S.gate);  // fc1(x) * gelu_tanh(gate(x))
      be.linear(S.hidden, w.w2, nullptr, S.branch);
      be.add(S.x, S.branch);
    }
    if (observer) observer("block_" + std::to_string(i), be.download(st.front().x));
  }
  const Tensor final_norm =
      final_norm_device_.defined() ? final_norm_device_ : upload_vector(final_norm_);
  if (resident_) final_norm_device_ = final_norm;
  std::vector<Tensor> outs;
  for (State& S : st) {
    Tensor out = be.empty({S.len, d}, DType::F32);
    be.rms_norm(S.x, final_norm, eps, out);
    outs.push_back(be.download(out));
  }
  return outs;
}

Tensor T5Encoder::encode(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask,
                         const T5Observer& observer) {
  check_tokens(ids, mask, cfg_.vocab);
  // A prefix mask (the tokenizer's): the first `valid` rows attend only to the first `valid` keys
  // (masked keys add exp(finfo.min - max) = 0 exactly; the bias depends on j - i), so the prefix
  // alone gives the same rows at a fraction of the cost (a prompt is ~10-100 of 512 positions).
  const auto [valid, prefix] = mask_prefix(mask);
  if (prefix) {
    const std::vector<int64_t> head_ids(ids.begin(), ids.begin() + valid);
    const std::vector<int64_t> head_mask(static_cast<size_t>(valid), 1);
    return forward(head_ids, head_mask, observer);
  }
  const Tensor out = forward(ids, mask, observer);
  return out.slice_rows(0, valid).clone();
}

std::vector<Tensor> T5Encoder::encode_many(const std::vector<T5Input>& inputs) {
  // encode() of each, with one pass over the weights: prefix masks run their prefix alone.
  std::vector<T5Input> runs;
  std::vector<int64_t> valid;
  std::vector<bool> trim;
  for (const T5Input& in : inputs) {
    check_tokens(in.ids, in.mask, cfg_.vocab);
    const auto [n, prefix] = mask_prefix(in.mask);
    if (prefix)
      runs.push_back({std::vector<int64_t>(in.ids.begin(), in.ids.begin() + n),
                      std::vector<int64_t>(static_cast<size_t>(n), 1)});
    else
      runs.push_back(in);
    valid.push_back(n);
    trim.push_back(!prefix);
  }
  std::vector<Tensor> outs = forward_many(runs);
  for (size_t i = 0; i < outs.size(); ++i)
    if (trim[i]) outs[i] = outs[i].slice_rows(0, valid[i]).clone();
  return outs;
}

// ---------------------------------------------------------------------------------------------
// Checkpoint discovery.

namespace {

constexpr const char* kOfficialAnchor = "blocks.0.attn.q.weight";
constexpr const char* kHfAnchor = "encoder.block.0.layer.0.SelfAttention.q.weight";
constexpr const char* kStackAnchor = "block.0.layer.0.SelfAttention.q.weight";

// Official key -> Hugging Face (UMT5EncoderModel) key; empty when there is none.
std::string hf_key(const std::string& official, bool shared_embedding) {
  if (official == "token_embedding.weight")
    return shared_embedding ? "shared.weight" : "encoder.embed_tokens.weight";
  if (official == "norm.weight") return "encoder.final_layer_norm.weight";
  if (official == "pos_embedding.embedding.weight")  // shared_pos: T5 keeps it in block 0
    return "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
  if (official.rfind("blocks.", 0) != 0) return {};
  const size_t dot = official.find('.', 7);
  const std::string n = official.substr(7, dot - 7), rest = official.substr(dot + 1);
  const std::string b = "encoder.block." + n + ".layer.";
  static const std::map<std::string, std::string> map = {
      {"norm1.weight", "0.layer_norm.weight"},
      {"attn.q.weight", "0.SelfAttention.q.weight"},
      {"attn.k.weight", "0.SelfAttention.k.weight"},
      {"attn.v.weight", "0.SelfAttention.v.weight"},
      {"attn.o.weight", "0.SelfAttention.o.weight"},
      {"pos_embedding.embedding.weight", "0.SelfAttention.relative_attention_bias.weight"},
      {"norm2.weight", "1.layer_norm.weight"},
      // T5DenseGatedActDense: act(wi_0(x)) * wi_1(x) -> wo, i.e. gate, fc1, fc2.
      {"ffn.gate.0.weight", "1.DenseReluDense.wi_0.weight"},
      {"ffn.fc1.weight", "1.DenseReluDense.wi_1.weight"},
      {"ffn.fc2.weight", "1.DenseReluDense.wo.weight"},
  };
  const auto it = map.find(rest);
  return it == map.end() ? std::string() : b + it->second;
}

// Distinct N of names "<prefix><stem>N.", which must be 0..count-1.
int count_blocks(const std::vector<std::string>& names, const std::string& stem,
                 const std::string& path) {
  std::set<int> idx;
  for (const std::string& name : names) {
    if (name.compare(0, stem.size(), stem) != 0) continue;
    const char* p = name.c_str() + stem.size();
    if (*p < '0' || *p > '9') continue;
    idx.insert(std::atoi(p));
  }
  const int n = static_cast<int>(idx.size());
  if (n == 0 || *idx.rbegin() != n - 1)
    throw Error(path + ": text encoder blocks under '" + stem + "' are not numbered 0.." +
                std::to_string(n - 1));
  return n;
}

}  // namespace

std::string t5_checkpoint_key(const T5Source& src, const std::string& official_key) {
  if (src.layout == T5KeyLayout::Official) return src.prefix + official_key;
  const bool stack = src.layout == T5KeyLayout::HuggingFaceStack;
  const bool shared = !stack && src.checkpoint.contains(src.prefix + "shared.weight");
  const std::string k = hf_key(official_key, shared);
  if (k.empty()) throw Error("no Hugging Face name for text encoder key '" + official_key + "'");
  // A T5Stack's names are the encoder's without "encoder." (its embedding is embed_tokens).
  return src.prefix + (stack ? k.substr(std::string_view("encoder.").size()) : k);
}

T5Source open_t5(const std::string& path) {
  Checkpoint ck = Checkpoint::open(path);
  const std::vector<std::string> names = ck.names();
  T5Source src{ck, {}, T5KeyLayout::Official, T5Config{}, "tensor shapes"};
  if (auto p = shortest_prefix(names, kOfficialAnchor)) {
    src.prefix = *p;
  } else if (auto h = shortest_prefix(names, kHfAnchor)) {
    src.prefix = *h;
    src.layout = T5KeyLayout::HuggingFace;
  } else if (auto st = shortest_prefix(names, kStackAnchor)) {
    src.prefix = *st;
    src.layout = T5KeyLayout::HuggingFaceStack;
  } else {
    throw Error(path + ": not a umT5 encoder (no tensor '" + std::string(kOfficialAnchor) +
                "' or '" + kHfAnchor + "' under any prefix)");
  }
  for (const std::string& name : names) {
    constexpr std::string_view kScale = ".scale_weight";
    const bool scale = name.size() > kScale.size() &&
                       std::string_view(name).substr(name.size() - kScale.size()) == kScale;
    if (scale || name == "scaled_fp8" || name == src.prefix + "scaled_fp8") src.scaled_fp8 = true;
  }
  const bool hf = src.layout != T5KeyLayout::Official;
  const std::string hf_blocks =
      src.layout == T5KeyLayout::HuggingFaceStack ? "block." : "encoder.block.";
  auto info = [&](const std::string& official) -> const TensorInfo* {
    const std::string key = t5_checkpoint_key(src, official);
    const TensorInfo* t = ck.find(key);
    if (!t) throw Error(path + ": text encoder tensor '" + key + "' is missing");
    return t;
  };
  auto dim2 = [&](const TensorInfo* t) {
    if (t->shape.size() != 2)
      throw Error(path + ": text encoder tensor '" + t->name + "' has shape " +
                  shape_str(t->shape) + ", expected 2-D");
    return t->shape;
  };
  T5Config& c = src.config;
  try {
    // Shapes first: they define every real checkpoint; a metadata config must agree with them.
    const Shape emb = dim2(info("token_embedding.weight"));
    const Shape q = dim2(info("blocks.0.attn.q.weight"));
    const Shape fc1 = dim2(info("blocks.0.ffn.fc1.weight"));
    c.vocab = static_cast<int>(emb[0]);
    c.dim = static_cast<int>(emb[1]);
    c.dim_attn = static_cast<int>(q[0]);
    c.dim_ffn = static_cast<int>(fc1[0]);
    c.num_layers = count_blocks(names, src.prefix + (hf ? hf_blocks : "blocks."), path);
    // The relative position table is [num_buckets, num_heads]: per block (umT5) or shared.
    const std::string per_block =
        hf ? hf_blocks + "1.layer.0.SelfAttention.relative_attention_bias.weight"
           : "blocks.0.pos_embedding.embedding.weight";
    c.shared_pos = hf ? (c.num_layers > 1 && !ck.contains(src.prefix + per_block))
                      : !ck.contains(src.prefix + per_block);
    const Shape pos = dim2(info(c.shared_pos ? "pos_embedding.embedding.weight"
                                             : "blocks.0.pos_embedding.embedding.weight"));
    c.num_buckets = static_cast<int>(pos[0]);
    c.num_heads = static_cast<int>(pos[1]);

    if (const std::optional<nlohmann::json> meta = metadata_config(ck)) {
      const nlohmann::json& k = meta->at("constructor");
      T5Config m = c;
      m.vocab = k.value("vocab", m.vocab);
      m.dim = k.value("dim", m.dim);
      m.dim_attn = k.value("dim_attn", m.dim_attn);
      m.dim_ffn = k.value("dim_ffn", m.dim_ffn);
      m.num_heads = k.value("num_heads", m.num_heads);
      m.num_layers = k.value("num_layers", m.num_layers);
      m.num_buckets = k.value("num_buckets", m.num_buckets);
      m.shared_pos = k.value("shared_pos", m.shared_pos);
      if (m.vocab != c.vocab || m.dim != c.dim || m.dim_attn != c.dim_attn ||
          m.dim_ffn != c.dim_ffn || m.num_heads != c.num_heads || m.num_layers != c.num_layers ||
          m.num_buckets != c.num_buckets || m.shared_pos != c.shared_pos)
        throw Error("the metadata config (vocab " + std::to_string(m.vocab) + ", dim " +
                    std::to_string(m.dim) + ", heads " + std::to_string(m.num_heads) + ", layers " +
                    std::to_string(m.num_layers) + ") disagrees with the tensor shapes (vocab " +
                    std::to_string(c.vocab) + ", dim " + std::to_string(c.dim) + ", heads " +
                    std::to_string(c.num_heads) + ", layers " + std::to_string(c.num_layers) + ")");
      src.config_origin = "file metadata";
    } else if (const auto cfg = ck.config_json()) {
      // A Hugging Face config.json: the values the shapes cannot tell.
      const nlohmann::json& j = *cfg;
      c.max_dist = j.value("relative_attention_max_distance", c.max_dist);
      c.eps = j.value("layer_norm_epsilon", c.eps);
      const std::string ff = j.value("feed_forward_proj", std::string("gated-gelu"));
      if (ff != "gated-gelu")
        throw Error("config.json feed_forward_proj is '" + ff + "', umT5 needs 'gated-gelu'");
      src.config_origin = "tensor shapes + config.json";
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": bad text encoder config: " + e.what());
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(path, 0) == 0) throw;
    throw Error(path + ": " + what);
  }
  c.validate(path);
  return src;
}

std::unique_ptr<T5Encoder> load_t5(const T5Source& src, Backend& backend) {
  const WeightSource source(src.checkpoint, [&src](const std::string& official) {
    return t5_checkpoint_key(src, official);
  });
  // The checks and the scale are umT5's own: a `.scale_weight` scales a weight of any float dtype
  // (WeightSource's, fp8 ones only), and a scaled fp8 file must give every fp8 weight one.
  const T5WeightFn weights = [&](const std::string& official, const Shape& shape) {
    const std::string key = source.stored_name(official);
    const TensorInfo* info = source.info(official);
    if (!info)
      throw Error(src.checkpoint.path() + ": text encoder tensor '" + key + "' is missing");
    if (info->shape != shape)
      throw Error(src.checkpoint.path() + ": text encoder tensor '" + key + "' has shape " +
                  shape_str(info->shape) + ", expected " + shape_str(shape));
    if (!is_float(info->dtype))
      throw Error(src.checkpoint.path() + ": text encoder tensor '" + key + "' has dtype " +
                  std::string(dtype_name(info->dtype)) + ", expected a float type");
    T5Weight w;
    // ComfyUI scaled fp8: <module>.weight holds weight / scale, <module>.scale_weight the scale.
    constexpr std::string_view kWeight = ".weight";
    const std::string scale_key =
        key.substr(0,
                   key.size() - (std::string_view(key).ends_with(kWeight) ? kWeight.size() : 0)) +
        ".scale_weight";
    if (const TensorInfo* scale = src.checkpoint.find(scale_key)) {
      if (scale->numel() != 1 || !is_float(scale->dtype))
        throw Error(src.checkpoint.file_of(scale_key) + ": text encoder tensor '" + scale_key +
                    "' (the scale of '" + key + "') has shape " + shape_str(scale->shape) +
                    " and dtype " + std::string(dtype_name(scale->dtype)) +
                    ", expected a single float value");
      w.scale = src.checkpoint.tensor_f32(scale_key).f32()[0];
      if (!std::isfinite(w.scale))
        throw Error(src.checkpoint.file_of(scale_key) + ": text encoder tensor '" + scale_key +
                    "' is not a finite number");
    } else if (src.scaled_fp8 && is_fp8(info->dtype)) {
      throw Error(src.checkpoint.file_of(key) + ": text encoder tensor '" + key + "' is " +
                  std::string(dtype_name(info->dtype)) +
                  " in a scaled fp8 file but has no scale '" + scale_key + "'");
    }
    float fp8_scale = 1.0f;  // WeightSource's reading of the same scale_weight (fp8 only)
    w.stored = source.get_stored(official, shape, fp8_scale);  // after the checks above
    return w;
  };
  return std::make_unique<T5Encoder>(src.config, backend, weights);
}

}  // namespace fisdit::wan
