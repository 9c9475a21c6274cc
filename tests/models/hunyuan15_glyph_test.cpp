// HunyuanVideo 1.5's glyph text encoder (byT5 with the Glyph-SDXL-v2 weights) against the official
// code (tests/data/hunyuan15/glyph_tiny, tools/fixtures/gen_hunyuan15_glyph_fixture.py): the
// quoted texts, their formatting, the byT5 token ids with the color and font tokens, the encoder
// output, and the errors for a wrong folder; the same encoder read from diffusers' pipeline layout
// (glyph_tiny_diffusers, tools/fixtures/gen_hunyuan15_glyph_diffusers_fixture.py) gives the same
// ids and states.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../io/io_test_util.h"
#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/hunyuan15/glyph.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;

std::string glyph_dir() { return std::string(FISDIT_TEST_DATA) + "/hunyuan15/glyph_tiny"; }
std::string diffusers_dir() {
  return std::string(FISDIT_TEST_DATA) + "/hunyuan15/glyph_tiny_diffusers";
}

nlohmann::json fixture_meta(const SafetensorsFile& f) {
  return nlohmann::json::parse(f.metadata().at("config"))["fixture"];
}

// Every case of the official fixture through `enc`: the same ids, and the same states within
// 1e-5 relative L2 (fp32 on both sides; only the summation order differs).
void expect_official_outputs(hunyuan15::GlyphEncoder& enc, const char* label) {
  const auto f = SafetensorsFile::open(glyph_dir() + "/expected.safetensors");
  const nlohmann::json meta = fixture_meta(*f);
  for (size_t i = 0; i < meta["cases"].size(); ++i) {
    const std::string name = "case" + std::to_string(i);
    std::vector<int64_t> ids;
    const Tensor got = enc.encode(meta["cases"][i]["prompt"].get<std::string>(), &ids);
    const Tensor want_ids = f->tensor(name + ".ids");
    ASSERT_EQ(static_cast<int64_t>(ids.size()), want_ids.numel()) << name;
    for (int64_t j = 0; j < want_ids.numel(); ++j)
      EXPECT_EQ(ids[static_cast<size_t>(j)], want_ids.data_as<int64_t>()[j]) << name << " " << j;
    const Tensor want = f->tensor_f32(name + ".byt5");
    ASSERT_EQ(got.dim(0), want.dim(0)) << name;
    if (want.dim(0) == 0) continue;
    const double err = rel_l2(got, want);
    std::printf("hunyuan15 glyph (%s) %s: rel L2 %.3g\n", label, name.c_str(), err);
    EXPECT_LE(err, 1e-5) << name;
  }
}

TEST(Glyph, TextsTokensAndStatesMatchTheOfficialCode) {
  const auto f = SafetensorsFile::open(glyph_dir() + "/expected.safetensors");
  const nlohmann::json meta = fixture_meta(*f);
  const std::vector<std::string> added =
      hunyuan15::glyph_added_tokens(glyph_dir() + "/Glyph-SDXL-v2");
  ASSERT_EQ(added.size(), meta["added_tokens"].size());
  for (size_t i = 0; i < added.size(); ++i)
    EXPECT_EQ(meta["added_tokens"][added[i]].get<int64_t>(), 384 + static_cast<int64_t>(i))
        << added[i];
  const hunyuan15::ByT5Tokenizer tok(added);
  EXPECT_EQ(tok.vocab_size(), meta["tokenizer_len"].get<int64_t>());
  auto backend = make_cpu_backend();
  hunyuan15::GlyphEncoder enc(std::string(FISDIT_TEST_DATA) + "/hunyuan15/glyph_tiny", *backend,
                              meta["max_length"].get<int64_t>());
  for (const auto& c : meta["cases"]) {
    const auto texts = c["glyph_texts"].get<std::vector<std::string>>();
    EXPECT_EQ(hunyuan15::glyph_texts(c["prompt"].get<std::string>()), texts);
    if (!texts.empty()) {
      EXPECT_EQ(hunyuan15::glyph_prompt(texts), c["formatted"].get<std::string>());
    }
  }
  expect_official_outputs(enc, "official");
}

TEST(Glyph, DiffusersLayoutGivesTheOfficialIdsAndStates) {
  // tokenizer_2's added tokens are the release's, with the release tokenizer's ids.
  const auto f = SafetensorsFile::open(glyph_dir() + "/expected.safetensors");
  const nlohmann::json meta = fixture_meta(*f);
  const std::vector<std::string> added =
      hunyuan15::glyph_added_tokens_diffusers(diffusers_dir() + "/tokenizer_2");
  EXPECT_EQ(added, hunyuan15::glyph_added_tokens(glyph_dir() + "/Glyph-SDXL-v2"));
  for (size_t i = 0; i < added.size(); ++i)
    EXPECT_EQ(meta["added_tokens"][added[i]].get<int64_t>(), 384 + static_cast<int64_t>(i));
  auto backend = make_cpu_backend();
  const int64_t max_length = meta["max_length"].get<int64_t>();
  hunyuan15::GlyphEncoder folders(diffusers_dir() + "/text_encoder_2",
                                  diffusers_dir() + "/tokenizer_2", *backend, max_length);
  EXPECT_EQ(folders.dim(), 32);
  expect_official_outputs(folders, "diffusers");
}

TEST(Glyph, ADiffusersFolderMissingOrWrongIsAClearError) {
  auto backend = make_cpu_backend();
  const fs::path tmp = fs::temp_directory_path() / "fisdit_glyph_diffusers_test";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  auto error_of = [&] {
    return iotest::error_of([&] {
      hunyuan15::GlyphEncoder((tmp / "text_encoder_2").string(), (tmp / "tokenizer_2").string(),
                              *backend);
    });
  };
  std::string e = error_of();
  EXPECT_NE(e.find("tokenizer_2: no such folder"), std::string::npos) << e;
  fs::copy(diffusers_dir() + "/tokenizer_2", tmp / "tokenizer_2", fs::copy_options::recursive);
  e = error_of();
  EXPECT_NE(e.find("text_encoder_2: no such folder"), std::string::npos) << e;
  fs::create_directories(tmp / "text_encoder_2");
  e = error_of();
  EXPECT_NE(e.find("text_encoder_2: directory has no *.safetensors"), std::string::npos) << e;
  fs::copy(diffusers_dir() + "/text_encoder_2", tmp / "text_encoder_2",
           fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  EXPECT_EQ(error_of(), "<no exception>");

  // tokenizer_2 without its config, or with an added token's id other than the release's.
  const fs::path config = tmp / "tokenizer_2" / "tokenizer_config.json";
  fs::rename(config, tmp / "tokenizer_config.json");
  e = error_of();
  EXPECT_NE(e.find("tokenizer_config.json: missing"), std::string::npos) << e;
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(std::ifstream(tmp / "tokenizer_config.json"));
  j["added_tokens_decoder"]["390"] = j["added_tokens_decoder"]["389"];
  j["added_tokens_decoder"].erase("389");
  std::ofstream(config) << j.dump();
  e = error_of();
  EXPECT_NE(e.find("added_tokens.json gives '<zh-font-2>' id 389, but"), std::string::npos) << e;
  fs::remove(tmp / "tokenizer_2" / "added_tokens.json");
  e = error_of();
  EXPECT_NE(e.find("tokenizer_config.json: the added token '<zh-font-2>' has id 390"),
            std::string::npos)
      << e;
  // One font token fewer: the vocabulary no longer matches the embedding.
  j["added_tokens_decoder"].erase("390");
  std::ofstream(config) << j.dump();
  e = error_of();
  EXPECT_NE(e.find("embedding has 390 rows"), std::string::npos) << e;
  fs::remove_all(tmp);
}

TEST(Glyph, TokenizerEdgeCases) {
  const hunyuan15::ByT5Tokenizer tok({"<color-0>"});
  // </s> takes the spaces around it; <color-0> does not; é is two bytes.
  EXPECT_EQ(tok.encode("a </s> b<color-0> é", 64),
            (std::vector<int64_t>{100, 1, 101, 384, 35, 198, 172, 1}));
  EXPECT_EQ(tok.encode("", 8), (std::vector<int64_t>{1}));
  EXPECT_EQ(tok.encode("abcdef", 4), (std::vector<int64_t>{100, 101, 102, 1}));
  EXPECT_EQ(tok.encode("<extra_id_3><extra_id_12>", 8), (std::vector<int64_t>{262, 271, 1}));
  EXPECT_EQ(hunyuan15::glyph_texts("say \"a\" and \"a\" and “b”"),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(hunyuan15::glyph_texts("one \"x\" only"), (std::vector<std::string>{"x"}));
  EXPECT_TRUE(hunyuan15::glyph_texts("open \" never closed").empty());
}

TEST(Glyph, AWrongFolderIsAClearError) {
  auto backend = make_cpu_backend();
  auto error_of = [&](const std::string& dir) {
    return iotest::error_of([&] { hunyuan15::GlyphEncoder enc(dir, *backend); });
  };
  const fs::path tmp = fs::temp_directory_path() / "fisdit_glyph_test";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::string e = error_of(tmp.string());
  EXPECT_NE(e.find("no Glyph-SDXL-v2 checkpoint"), std::string::npos) << e;
  // Assets that do not match the checkpoint's vocabulary (one color more).
  fs::copy(glyph_dir() + "/Glyph-SDXL-v2", tmp / "Glyph-SDXL-v2", fs::copy_options::recursive);
  std::ofstream(tmp / "Glyph-SDXL-v2" / "assets" / "color_idx.json")
      << R"({"white": 0, "black": 1, "red": 2, "blue": 3})";
  e = error_of(tmp.string());
  EXPECT_NE(e.find("embedding has 390 rows"), std::string::npos) << e;
  std::ofstream(tmp / "Glyph-SDXL-v2" / "assets" / "color_idx.json") << "not json";
  e = error_of(tmp.string());
  EXPECT_NE(e.find("color_idx.json: not JSON"), std::string::npos) << e;
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace fisdit
