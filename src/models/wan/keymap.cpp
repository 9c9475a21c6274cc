#include "models/wan/keymap.h"

#include <charconv>
#include <set>
#include <unordered_set>
#include <utility>

#include "core/dtype.h"
#include "fisdit/error.h"
#include "io/text.h"

namespace fisdit::wan {

namespace {

struct Rename {
  std::string_view official;
  std::string_view diffusers;
};

// Module paths outside the blocks.
constexpr Rename kTopLevel[] = {
    {"patch_embedding", "patch_embedding"},
    {"text_embedding.0", "condition_embedder.text_embedder.linear_1"},
    {"text_embedding.2", "condition_embedder.text_embedder.linear_2"},
    {"time_embedding.0", "condition_embedder.time_embedder.linear_1"},
    {"time_embedding.2", "condition_embedder.time_embedder.linear_2"},
    {"time_projection.1", "condition_embedder.time_proj"},
    {"head.modulation", "scale_shift_table"},
    {"head.head", "proj_out"},
    {"img_emb.proj.0", "condition_embedder.image_embedder.norm1"},
    {"img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"},
    {"img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"},
    {"img_emb.proj.4", "condition_embedder.image_embedder.norm2"},
    {"img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"},
};

// Module paths inside `blocks.N.`.
constexpr Rename kBlock[] = {
    {"modulation", "scale_shift_table"},
    {"self_attn.q", "attn1.to_q"},
    {"self_attn.k", "attn1.to_k"},
    {"self_attn.v", "attn1.to_v"},
    {"self_attn.o", "attn1.to_out.0"},
    {"self_attn.norm_q", "attn1.norm_q"},
    {"self_attn.norm_k", "attn1.norm_k"},
    {"cross_attn.q", "attn2.to_q"},
    {"cross_attn.k", "attn2.to_k"},
    {"cross_attn.v", "attn2.to_v"},
    {"cross_attn.o", "attn2.to_out.0"},
    {"cross_attn.norm_q", "attn2.norm_q"},
    {"cross_attn.norm_k", "attn2.norm_k"},
    {"cross_attn.k_img", "attn2.add_k_proj"},
    {"cross_attn.v_img", "attn2.add_v_proj"},
    {"cross_attn.norm_k_img", "attn2.norm_added_k"},
    {"norm3", "norm2"},
    {"ffn.0", "ffn.net.0.proj"},
    {"ffn.2", "ffn.net.2"},
};

// `name` is `module` or `module.<more>`.
bool under_module(std::string_view name, std::string_view module) {
  return name.size() >= module.size() && name.substr(0, module.size()) == module &&
         (name.size() == module.size() || name[module.size()] == '.');
}

template <size_t N>
std::string rename(std::string_view name, const Rename (&table)[N], bool to_diffusers) {
  for (const Rename& r : table) {
    const std::string_view from = to_diffusers ? r.official : r.diffusers;
    const std::string_view to = to_diffusers ? r.diffusers : r.official;
    if (under_module(name, from)) return std::string(to) + std::string(name.substr(from.size()));
  }
  return std::string(name);
}

// Splits "blocks.<digits>.<rest>" into ("blocks.<digits>.", rest).
bool split_block(std::string_view name, std::string_view& head, std::string_view& rest) {
  constexpr std::string_view kBlocks = "blocks.";
  if (name.substr(0, kBlocks.size()) != kBlocks) return false;
  size_t i = kBlocks.size();
  const size_t digits_begin = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == digits_begin || i >= name.size() || name[i] != '.') return false;
  head = name.substr(0, i + 1);
  rest = name.substr(i + 1);
  return true;
}

std::string map_name(std::string_view name, bool to_diffusers) {
  std::string_view head, rest;
  if (split_block(name, head, rest)) return std::string(head) + rename(rest, kBlock, to_diffusers);
  return rename(name, kTopLevel, to_diffusers);
}

std::string prefix_list() {
  std::string out;
  for (const auto& p : wan_prefixes()) out += (out.empty() ? "'" : ", '") + p + "'";
  return out;
}

}  // namespace

std::string layout_name(KeyLayout layout) {
  return layout == KeyLayout::Diffusers ? "diffusers" : "official";
}

std::string KeyMap::stored_name(const std::string& canonical) const {
  if (layout == KeyLayout::Official) return prefix + canonical;
  return prefix + map_name(canonical, /*to_diffusers=*/true);
}

std::optional<std::string> KeyMap::canonical_name(std::string_view stored) const {
  if (stored.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string_view rest = stored.substr(prefix.size());
  if (layout == KeyLayout::Official) return std::string(rest);
  return map_name(rest, /*to_diffusers=*/false);
}

const std::vector<std::string>& wan_prefixes() {
  static const std::vector<std::string> kPrefixes = {"", "model.diffusion_model.",
                                                     "diffusion_model.", "model."};
  return kPrefixes;
}

KeyMap detect_wan_layout(const std::vector<std::string>& names,
                         const std::optional<std::string>& prefix) {
  const std::unordered_set<std::string_view> set(names.begin(), names.end());
  const auto has = [&](const std::string& name) { return set.count(name) != 0; };

  std::vector<std::string> candidates;
  if (prefix) {
    if (!has(*prefix + "patch_embedding.weight"))
      throw Error("no Wan DiT tensors found (looked for patch_embedding.weight with prefix " +
                  squoted(*prefix) + ")");
    candidates.push_back(*prefix);
  } else {
    for (const auto& p : wan_prefixes())
      if (has(p + "patch_embedding.weight")) candidates.push_back(p);
    if (candidates.empty())
      throw Error("no Wan DiT tensors found (looked for patch_embedding.weight with prefixes " +
                  prefix_list() + ")");
    if (candidates.size() > 1) {
      std::string list;
      for (const auto& p : candidates) list += (list.empty() ? "'" : ", '") + p + "'";
      throw Error("ambiguous Wan DiT tensor names: patch_embedding.weight exists under prefixes " +
                  list + "; choose one");
    }
  }
  const std::string& p = candidates[0];
  const bool official = has(p + "time_embedding.0.weight") || has(p + "head.head.weight") ||
                        has(p + "blocks.0.self_attn.q.weight");
  const bool diffusers = has(p + "condition_embedder.time_embedder.linear_1.weight") ||
                         has(p + "proj_out.weight") || has(p + "blocks.0.attn1.to_q.weight");
  if (official == diffusers)
    throw Error("cannot tell the Wan DiT naming under prefix " + squoted(p) + ": found " +
                (official ? "both" : "neither") +
                " official (time_embedding.0.weight, head.head.weight) and diffusers "
                "(condition_embedder.time_embedder.linear_1.weight, proj_out.weight) names");
  return KeyMap{official ? KeyLayout::Official : KeyLayout::Diffusers, p};
}

KeyMap detect_wan_layout(const Checkpoint& checkpoint, const std::optional<std::string>& prefix) {
  try {
    return detect_wan_layout(checkpoint.names(), prefix);
  } catch (const Error& e) {
    throw Error(checkpoint.path() + ": " + e.what());
  }
}

int count_wan_blocks(const std::vector<std::string>& names, const KeyMap& keymap) {
  std::set<int> blocks;
  for (const auto& name : names) {
    const std::string_view n(name);
    if (n.substr(0, keymap.prefix.size()) != keymap.prefix) continue;
    std::string_view head, rest;
    if (!split_block(n.substr(keymap.prefix.size()), head, rest)) continue;
    const std::string_view digits = head.substr(7, head.size() - 8);  // "blocks." ... "."
    int index = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec != std::errc() || ptr != digits.data() + digits.size() || index > 100000)
      throw Error("tensor " + squoted(name) + " has an implausible block index");
    blocks.insert(index);
  }
  int expected = 0;
  for (int b : blocks) {
    if (b != expected)
      throw Error("Wan DiT blocks under prefix " + squoted(keymap.prefix) +
                  " are not numbered 0.." + std::to_string(blocks.size() - 1) + ": block " +
                  std::to_string(expected) + " is missing");
    ++expected;
  }
  return static_cast<int>(blocks.size());
}

WeightSource dit_weights(Checkpoint checkpoint, const KeyMap& keymap) {
  return WeightSource(std::move(checkpoint), [keymap](const std::string& canonical) {
    return keymap.stored_name(canonical);
  });
}

}  // namespace fisdit::wan
