// The Qwen2 byte-level BPE tokenizer (HunyuanVideo 1.5's text encoder) against Hugging Face
// `tokenizers` on tests/data/qwen_tokenizer (tools/fixtures/gen_qwen_tokenizer_fixture.py): the
// same ids and decoded text for every prompt, and clear errors for bad files and bad text.
#include "models/hunyuan15/qwen_tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "../io/io_test_util.h"
#include "fisdit/error.h"

namespace fisdit::hunyuan15 {
namespace {

namespace fs = std::filesystem;
using iotest::error_of;

std::string data(const std::string& name) {
  return std::string(FISDIT_TEST_DATA) + "/qwen_tokenizer/" + name;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(QwenTokenizer, MatchesHuggingFaceTokenizersOnEveryPrompt) {
  const QwenTokenizer tok(data(""));  // the directory: its tokenizer.json
  const nlohmann::json expected = read_json(data("expected.json"));
  EXPECT_EQ(tok.vocab_size(), expected.at("vocab_size").get<int64_t>());
  int compared = 0;
  for (const nlohmann::json& c : expected.at("cases")) {
    const std::string text = c.at("text");
    const std::vector<int32_t> want = c.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok.encode(text);
    EXPECT_EQ(got, want) << "text: " << text;
    EXPECT_EQ(tok.decode(got), c.at("decoded").get<std::string>()) << "text: " << text;
    ++compared;
  }
  EXPECT_EQ(compared, 14);
  EXPECT_EQ(tok.token_id("<|im_start|>"), 1);
  EXPECT_EQ(tok.token_id("<|im_end|>"), 2);
  EXPECT_EQ(tok.token_id("no such token"), -1);
  // Special tokens split the text; what is between them is tokenized on its own.
  const std::vector<int32_t> ids = tok.encode("<|im_start|>a cat<|im_end|>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(std::vector<int32_t>(ids.begin() + 1, ids.end() - 1), tok.encode("a cat"));
}

TEST(QwenTokenizer, NfcComposesBeforeSplitting) {
  const QwenTokenizer tok(data("tokenizer.json"));
  EXPECT_EQ(tok.encode("Cafe\u0301"), tok.encode("Caf\u00e9"));
  EXPECT_NE(tok.encode("Cafe"), tok.encode("Caf\u00e9"));
}

TEST(QwenTokenizer, BadTextAndBadFilesAreClearErrors) {
  const QwenTokenizer tok(data("tokenizer.json"));
  EXPECT_NE(error_of([&] { tok.encode(std::string("ok \xff\xfe bad")); }).find("UTF-8"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode({999999}); }).find("999999"), std::string::npos);

  const fs::path dir = fs::path(::testing::TempDir()) / "fisdit_qwen_tokenizer_bad";
  fs::create_directories(dir);
  const auto write = [&](const std::string& name, const std::string& text) {
    const std::string p = (dir / name).string();
    std::ofstream(p) << text;
    return p;
  };
  EXPECT_NE(error_of([&] { QwenTokenizer((dir / "missing.json").string()); }).find("missing.json"),
            std::string::npos);
  const std::string broken = write("broken.json", "{ not json");
  EXPECT_NE(error_of([&] { QwenTokenizer t(broken); }).find("not valid JSON"), std::string::npos);
  nlohmann::json j = read_json(data("tokenizer.json"));
  nlohmann::json unigram = j;
  unigram["model"]["type"] = "Unigram";
  const std::string u = write("unigram.json", unigram.dump());
  EXPECT_NE(error_of([&] { QwenTokenizer t(u); }).find("model.type"), std::string::npos);
  nlohmann::json bad_merge = j;
  bad_merge["model"]["merges"][0] = nlohmann::json::array({"zzz", "qqq"});
  const std::string m = write("merge.json", bad_merge.dump());
  EXPECT_NE(error_of([&] { QwenTokenizer t(m); }).find("model.merges[0]"), std::string::npos);
  nlohmann::json bad_regex = j;
  bad_regex["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  const std::string r = write("regex.json", bad_regex.dump());
  EXPECT_NE(error_of([&] { QwenTokenizer t(r); }).find("regex"), std::string::npos);
  nlohmann::json nfkc = j;
  nfkc["normalizer"] = {{"type", "NFKC"}};
  const std::string n = write("nfkc.json", nfkc.dump());
  EXPECT_NE(error_of([&] { QwenTokenizer t(n); }).find("normalizer"), std::string::npos);
  // Merges as "a b" strings (the older tokenizer.json form) give the same tokenizer.
  nlohmann::json strings = j;
  for (nlohmann::json& merge : strings["model"]["merges"])
    merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  const QwenTokenizer older(write("strings.json", strings.dump()));
  const std::string text = "A golden retriever jumps over the snowy forest, 2026!";
  EXPECT_EQ(older.encode(text), tok.encode(text));
}

}  // namespace
}  // namespace fisdit::hunyuan15
