// The prompt as HunyuanVideo 1.5's text encoder sees it: the official chat template, its crop and
// its length limit, against the token ids the official TextEncoder ran in
// tests/data/hunyuan15/text_tiny.safetensors (with the small Qwen2 tokenizer beside it,
// text_tokenizer.json).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/hunyuan15/text_prompt.h"

namespace fisdit {
namespace {

TEST(HunyuanPrompt, TokensAndCropEqualTheOfficialTextEncoder) {
  const auto fixture =
      SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/hunyuan15/text_tiny.safetensors");
  const auto meta = nlohmann::json::parse(fixture->metadata().at("config"))["fixture"];
  EXPECT_EQ(hunyuan15::system_prompt(hunyuan15::PromptKind::Video),
            meta["system_video"].get<std::string>());
  EXPECT_EQ(hunyuan15::system_prompt(hunyuan15::PromptKind::Image),
            meta["system_image"].get<std::string>());
  const hunyuan15::QwenTokenizer tok(std::string(FISDIT_TEST_DATA) +
                                     "/hunyuan15/text_tokenizer.json");
  const int64_t max_length = meta["max_length"].get<int64_t>();
  int truncated = 0;
  for (size_t i = 0; i < meta["cases"].size(); ++i) {
    const auto& c = meta["cases"][i];
    const hunyuan15::PromptTokens p =
        hunyuan15::prompt_tokens(tok, c["prompt"].get<std::string>(), max_length);
    EXPECT_EQ(p.crop_start, meta["crop_start"].get<int64_t>()) << i;
    const Tensor ids = fixture->tensor("case" + std::to_string(i) + ".ids");
    ASSERT_EQ(static_cast<int64_t>(p.ids.size()), ids.numel()) << i;
    for (int64_t j = 0; j < ids.numel(); ++j)
      ASSERT_EQ(p.ids[static_cast<size_t>(j)], ids.data_as<int64_t>()[j]) << i << " token " << j;
    EXPECT_EQ(p.dropped > 0, c["truncated"].get<bool>()) << i;
    EXPECT_LE(p.prompt_tokens(), max_length);
    truncated += p.dropped > 0;
  }
  EXPECT_EQ(truncated, 1);  // the long caption, and only it
  // The template around a prompt, and an empty prompt as one space.
  const std::string chat = hunyuan15::chat_text("S", "P");
  EXPECT_EQ(chat,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nP<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(hunyuan15::prompt_tokens(tok, "", max_length).ids,
            hunyuan15::prompt_tokens(tok, " ", max_length).ids);
  EXPECT_THROW(hunyuan15::prompt_tokens(tok, "x", 0), Error);
}

// fisdit text-encode with the text encoder fixture: the prompt through the template to the
// official context; a prompt over the limit warns; token ids are encoded as given.
TEST(HunyuanPrompt, TextEncodeCommandGivesTheOfficialContext) {
  namespace fs = std::filesystem;
  const std::string data = std::string(FISDIT_TEST_DATA) + "/hunyuan15/";
  const auto fixture = SafetensorsFile::open(data + "text_tiny.safetensors");
  const auto meta = nlohmann::json::parse(fixture->metadata().at("config"))["fixture"];
  const fs::path dir =
      fs::temp_directory_path() / ("fisdit_qwen_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto run = [&](const std::string& args, std::string* err) {
    const std::string err_path = (dir / "stderr.txt").string();
    const std::string cmd = "OMP_NUM_THREADS=2 " + std::string(FISDIT_CLI_PATH) +
                            " text-encode --text-encoder " + data + "text_tiny.safetensors " +
                            args + " >/dev/null 2>" + err_path;
    const int status = std::system(cmd.c_str());
    std::ifstream e(err_path);
    std::stringstream ss;
    ss << e.rdbuf();
    *err = ss.str();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  const std::string tok = " --tokenizer " + data + "text_tokenizer.json --text-len " +
                          std::to_string(meta["max_length"].get<int>());
  std::string err;
  for (int i : {0, 3}) {
    const std::string out = (dir / ("c" + std::to_string(i) + ".st")).string();
    // Single-quoted for the shell: the fixture prompts hold no single quote.
    const std::string prompt = meta["cases"][i]["prompt"].get<std::string>();
    ASSERT_EQ(prompt.find('\''), std::string::npos);
    ASSERT_EQ(run(tok + " --prompt '" + prompt + "' --output " + out, &err), 0) << err;
    const Tensor got = SafetensorsFile::open(out)->tensor_f32("context");
    EXPECT_LE(rel_l2(got, fixture->tensor_f32("case" + std::to_string(i) + ".hidden")), 1e-5) << i;
    EXPECT_EQ(err.find("warning") != std::string::npos, i == 3) << err;
  }
  EXPECT_NE(err.find("are dropped"), std::string::npos) << err;
  // Token ids (the template's, prefix included) give every row.
  const std::string ids = (dir / "ids.st").string(), out = (dir / "ids_out.st").string();
  const Tensor case_ids = fixture->tensor("case0.ids");
  Tensor mask = Tensor::zeros({case_ids.numel()}, DType::I64);
  for (int64_t j = 0; j < mask.numel(); ++j) mask.data_as<int64_t>()[j] = 1;
  write_safetensors(ids, {{"ids", case_ids}, {"mask", mask}});
  ASSERT_EQ(run("--inputs " + ids + " --output " + out, &err), 0) << err;
  EXPECT_EQ(SafetensorsFile::open(out)->tensor_f32("context").dim(0), case_ids.numel());
  // --glyph: the quoted text through byT5 into 'byt5' (the glyph fixture's first prompt).
  const auto glyph = SafetensorsFile::open(data + "glyph_tiny/expected.safetensors");
  const auto gmeta = nlohmann::json::parse(glyph->metadata().at("config"))["fixture"];
  const std::string quoted = gmeta["cases"][0]["prompt"].get<std::string>();
  ASSERT_EQ(quoted.find('\''), std::string::npos);
  ASSERT_EQ(
      run(tok + " --prompt '" + quoted + "' --glyph " + data + "glyph_tiny --output " + out, &err),
      0)
      << err;
  EXPECT_LE(rel_l2(SafetensorsFile::open(out)->tensor_f32("byt5"), glyph->tensor_f32("case0.byt5")),
            1e-5);
  ASSERT_EQ(run(tok + " --prompt 'no quotes' --glyph " + data + "glyph_tiny --output " + out, &err),
            0)
      << err;
  EXPECT_FALSE(SafetensorsFile::open(out)->contains("byt5"));
  EXPECT_NE(err.find("quotes no text"), std::string::npos) << err;
  // A prompt needs a tokenizer: the fixture file has none beside it.
  EXPECT_NE(run("--prompt x --output " + out, &err), 0);
  EXPECT_NE(err.find("--prompt needs --tokenizer"), std::string::npos) << err;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fisdit
