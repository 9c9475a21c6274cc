#pragma once
// The Hugging Face (UMT5EncoderModel: diffusers' text_encoder/, ComfyUI) name of an official
// T5Encoder key, written out here for the tests rather than taken from the loader's own map.
#include <map>
#include <string>

namespace fisdit::t5test {

inline std::string hf_name(const std::string& official) {
  if (official == "token_embedding.weight") return "shared.weight";
  if (official == "norm.weight") return "encoder.final_layer_norm.weight";
  const size_t dot = official.find('.', 7);  // "blocks.N."
  const std::string block = "encoder.block." + official.substr(7, dot - 7) + ".layer.";
  static const std::map<std::string, std::string> per_block = {
      {"norm1.weight", "0.layer_norm.weight"},
      {"attn.q.weight", "0.SelfAttention.q.weight"},
      {"attn.k.weight", "0.SelfAttention.k.weight"},
      {"attn.v.weight", "0.SelfAttention.v.weight"},
      {"attn.o.weight", "0.SelfAttention.o.weight"},
      {"pos_embedding.embedding.weight", "0.SelfAttention.relative_attention_bias.weight"},
      {"norm2.weight", "1.layer_norm.weight"},
      {"ffn.gate.0.weight", "1.DenseReluDense.wi_0.weight"},
      {"ffn.fc1.weight", "1.DenseReluDense.wi_1.weight"},
      {"ffn.fc2.weight", "1.DenseReluDense.wo.weight"}};
  return block + per_block.at(official.substr(dot + 1));
}

}  // namespace fisdit::t5test
