#pragma once
// Wan DiT tensor names. The canonical names are the official Wan 2.2 `WanModel.state_dict()` keys
// (github.com/Wan-Video/Wan2.2, wan/modules/model.py):
//
//   patch_embedding.{weight,bias}                    Conv3d [dim, in_dim, pt, ph, pw]
//   text_embedding.{0,2}.{weight,bias}               time_embedding.{0,2}.{weight,bias}
//   time_projection.1.{weight,bias}                  head.head.{weight,bias}
//   head.modulation [1, 2, dim]                      blocks.N.modulation [1, 6, dim]
//   blocks.N.{self_attn,cross_attn}.{q,k,v,o}.{weight,bias}
//   blocks.N.{self_attn,cross_attn}.{norm_q,norm_k}.weight
//   blocks.N.norm3.{weight,bias}                     blocks.N.ffn.{0,2}.{weight,bias}
//
// A checkpoint may instead use the diffusers `WanTransformer3DModel` names (as
// scripts/convert_wan_to_diffusers.py renames them), and either layout may sit under a prefix
// (ComfyUI: `model.diffusion_model.` or `diffusion_model.`; the test fixtures: `model.`).
// KeyMap turns a canonical name into the name stored in the checkpoint.
//
// Diffusers names of the canonical ones (N = block index):
//   time_embedding.{0,2}    -> condition_embedder.time_embedder.linear_{1,2}
//   time_projection.1       -> condition_embedder.time_proj
//   text_embedding.{0,2}    -> condition_embedder.text_embedder.linear_{1,2}
//   head.modulation         -> scale_shift_table
//   head.head               -> proj_out
//   blocks.N.modulation     -> blocks.N.scale_shift_table
//   blocks.N.self_attn.X    -> blocks.N.attn1.Y, X -> Y: q -> to_q, k -> to_k, v -> to_v,
//                              o -> to_out.0, norm_q -> norm_q, norm_k -> norm_k
//   blocks.N.cross_attn.X   -> blocks.N.attn2.Y, as above, and (Wan 2.1 I2V) k_img -> add_k_proj,
//                              v_img -> add_v_proj, norm_k_img -> norm_added_k
//   blocks.N.norm3          -> blocks.N.norm2 (the affine norm before cross-attention)
//   blocks.N.ffn.0          -> blocks.N.ffn.net.0.proj
//   blocks.N.ffn.2          -> blocks.N.ffn.net.2
//   img_emb.proj.{0,1,3,4}  -> condition_embedder.image_embedder.{norm1, ff.net.0.proj,
//                              ff.net.2, norm2} (Wan 2.1 I2V)
//   img_emb.emb_pos         -> condition_embedder.image_embedder.pos_embed
//   patch_embedding         -> patch_embedding
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/checkpoint.h"
#include "io/weights.h"

namespace fisdit::wan {

enum class KeyLayout { Official, Diffusers };
std::string layout_name(KeyLayout layout);  // "official", "diffusers"

struct KeyMap {
  KeyLayout layout = KeyLayout::Official;
  std::string prefix;  // prepended to every stored name, e.g. "model.diffusion_model."

  // The stored name of a canonical name. Names outside the tables above pass through unchanged
  // (behind the prefix).
  std::string stored_name(const std::string& canonical) const;
  // The canonical name of a stored one; nullopt when it lacks the prefix.
  std::optional<std::string> canonical_name(std::string_view stored) const;
};

// The prefixes detect_wan_layout tries, in order: "", "model.diffusion_model.",
// "diffusion_model.", "model.".
const std::vector<std::string>& wan_prefixes();

// Finds the prefix (the one given, or the first of wan_prefixes() under which
// `patch_embedding.weight` exists) and the layout of a Wan DiT's tensor names. Throws
// fisdit::Error when the names look like neither layout or when several prefixes match.
KeyMap detect_wan_layout(const std::vector<std::string>& names,
                         const std::optional<std::string>& prefix = std::nullopt);
// The same for a checkpoint; errors name its path.
KeyMap detect_wan_layout(const Checkpoint& checkpoint,
                         const std::optional<std::string>& prefix = std::nullopt);

// Number of DiT blocks (`blocks.N.` under the map's prefix); throws when the indices are not
// 0..count-1. Returns 0 when there are none.
int count_wan_blocks(const std::vector<std::string>& names, const KeyMap& keymap);

// The DiT's weights by canonical name through `keymap`.
WeightSource dit_weights(Checkpoint checkpoint, const KeyMap& keymap);

}  // namespace fisdit::wan
