// The umT5 tokenizer (Wan's prompt recipe on a SentencePiece model) against ids computed in Python
// (tests/data/tokenizer: tools/fixtures/gen_tokenizer_fixture.py), prompt -> context, and
// `fisdit text-encode --prompt`.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backend/backend.h"
#include "core/dtype.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/wan/prompt_clean.h"
#include "models/wan/t5.h"
#include "models/wan/t5_tokenizer.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;

std::string tokenizer_dir() { return std::string(FISDIT_TEST_DATA) + "/tokenizer"; }
std::string tokenizer_model() { return tokenizer_dir() + "/spiece.model"; }
std::string encoder_path() { return std::string(FISDIT_TEST_DATA) + "/wan/t5_tiny.safetensors"; }

const nlohmann::json& expected() {
  static const nlohmann::json j = [] {
    std::ifstream f(tokenizer_dir() + "/expected.json");
    EXPECT_TRUE(f.good()) << "missing tests/data/tokenizer/expected.json";
    return nlohmann::json::parse(f);
  }();
  return j;
}

const nlohmann::json& expected_case(const std::string& name) {
  for (const auto& c : expected()["cases"])
    if (c["name"] == name) return c;
  throw std::runtime_error("no case " + name + " in expected.json");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// A fresh temporary directory per test.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("fisdit_tok_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(file(name), std::ios::binary) << bytes;
  }

 private:
  fs::path path_;
};

TEST(PromptClean, EveryPromptCleansAsPythonDoes) {
  // html.unescape twice + strip, regex \s+ -> ' ' + strip: every HTML 4 entity, the legacy names
  // without ';', invalid numbers, Unicode whitespace (Python's computed result is in the file).
  int n = 0;
  for (const auto& c : expected()["cases"]) {
    EXPECT_EQ(wan::clean_prompt(c["prompt"].get<std::string>()), c["cleaned"].get<std::string>())
        << c["name"];
    ++n;
  }
  EXPECT_GE(n, 20);
}

TEST(PromptClean, HtmlUnescapeFollowsPython) {
  // Single-level facts of Python's html.unescape, independent of the tokenizer data.
  EXPECT_EQ(wan::html_unescape("&amp;amp;"), "&amp;");  // one level per call
  EXPECT_EQ(wan::html_unescape("&lt;&#60;&#x3c;&#X3C"), "<<<<");
  EXPECT_EQ(wan::html_unescape("caf&eacute caf&eacute;"), "caf\u00e9 caf\u00e9");
  EXPECT_EQ(wan::html_unescape("&ampx; &notit; &notin;"), "&x; \u00acit; \u2209");
  EXPECT_EQ(wan::html_unescape("&hellip &hellip;"), "&hellip \u2026");  // not a legacy name
  EXPECT_EQ(wan::html_unescape("&#150;&#0;&#x110000;&#1;"), "\u2013\ufffd\ufffd");
  EXPECT_EQ(wan::html_unescape("& &# &#x &; AT&T"), "& &# &#x &; AT&T");
  EXPECT_EQ(wan::html_unescape("&check;"), "&check;");  // HTML5-only: left as is (documented)
}

TEST(PromptClean, WhitespaceSetsArePythons) {
  // regex's \s collapses; U+001C..U+001F are only stripped at the ends (str.isspace).
  EXPECT_EQ(wan::collapse_whitespace(" a \t\n b\u3000\u00a0c\x1f d \x1e"), "a b c\x1f d");
  EXPECT_EQ(wan::strip_python_space("\x1c\u2028 x \u0085"), "x");
  EXPECT_FALSE(wan::is_regex_space(0x1F));
  EXPECT_TRUE(wan::is_python_space(0x1F));
  EXPECT_FALSE(wan::is_python_space(0x200B));  // zero width space is not whitespace
}

TEST(PromptClean, InvalidUtf8IsRefused) {
  for (const std::string bad : {"\xff", "a\xc3", "\xc0\xa0", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    const std::string err = error_of([&] { wan::clean_prompt(bad); });
    EXPECT_NE(err.find("the prompt is not valid UTF-8"), std::string::npos) << err;
  }
}

TEST(T5Tokenizer, OpensTheModelFileOrItsDirectory) {
  const wan::T5Tokenizer from_dir(tokenizer_dir());
  const wan::T5Tokenizer from_file(tokenizer_model());
  EXPECT_EQ(fs::path(from_dir.model_path()), fs::path(tokenizer_model()));
  EXPECT_EQ(from_dir.vocab_size(), expected()["vocab_size"].get<int>());
  // umT5's layout: <pad> 0, </s> 1.
  EXPECT_EQ(from_dir.pad_id(), 0);
  EXPECT_EQ(from_dir.eos_id(), 1);
  EXPECT_EQ(from_dir.tokenize("a cat").ids, from_file.tokenize("a cat").ids);
}

TEST(T5Tokenizer, EveryPromptGivesPythonsIdsAndMask) {
  const wan::T5Tokenizer tok(tokenizer_dir());
  int n = 0;
  for (const auto& c : expected()["cases"]) {
    const int max_length = c["max_length"];
    const wan::T5Tokens t = tok.tokenize(c["prompt"].get<std::string>(), max_length);
    EXPECT_EQ(t.ids, c["ids"].get<std::vector<int64_t>>()) << c["name"];
    EXPECT_EQ(t.mask, c["mask"].get<std::vector<int64_t>>()) << c["name"];
    EXPECT_EQ(t.length, c["length"].get<int64_t>()) << c["name"];
    ASSERT_EQ(t.ids.size(), static_cast<size_t>(max_length)) << c["name"];
    EXPECT_EQ(t.ids[t.length - 1], 1) << c["name"] << ": </s> is the last real token";
    ++n;
  }
  EXPECT_GE(n, 20);
}

TEST(T5Tokenizer, LongPromptsKeepTheirEndOfSequenceToken) {
  const wan::T5Tokenizer tok(tokenizer_dir());
  const auto& c = expected_case("long");
  const wan::T5Tokens t = tok.tokenize(c["prompt"].get<std::string>());
  EXPECT_EQ(t.length, wan::kT5TextLen);
  EXPECT_EQ(t.ids.back(), 1);
  EXPECT_GT(tok.encode_cleaned(c["cleaned"].get<std::string>()).size(), 511u);
  const Tensor ids = t.ids_tensor(), mask = t.mask_tensor();
  EXPECT_EQ(shape_str(ids.shape()), "[1, 512]");
  EXPECT_EQ(ids.dtype(), DType::I64);
  EXPECT_EQ(mask.dtype(), DType::I64);
  EXPECT_EQ(ids.data_as<int64_t>()[511], 1);
  EXPECT_EQ(mask.data_as<int64_t>()[511], 1);
  EXPECT_THROW(tok.tokenize("a cat", 0), Error);
}

TEST(T5Tokenizer, BadPathsGiveClearErrors) {
  TempDir dir;
  std::string err = error_of([&] { wan::T5Tokenizer t(dir.file("missing")); });
  EXPECT_NE(err.find(dir.file("missing") + ": no such file or directory"), std::string::npos)
      << err;

  err = error_of([&] { wan::T5Tokenizer t(dir.file("")); });
  EXPECT_NE(err.find("no spiece.model in this directory"), std::string::npos) << err;

  dir.write("tokenizer.json", "{\"model\": {\"type\": \"Unigram\"}}");
  err = error_of([&] { wan::T5Tokenizer t(dir.file("")); });
  EXPECT_NE(err.find("has tokenizer.json but no spiece.model"), std::string::npos) << err;
  err = error_of([&] { wan::T5Tokenizer t(dir.file("tokenizer.json")); });
  EXPECT_NE(err.find(dir.file("tokenizer.json") + ": not a valid SentencePiece model"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("pass spiece.model"), std::string::npos) << err;

  // The real model cut short, and random bytes.
  std::ifstream f(tokenizer_model(), std::ios::binary);
  const std::string model((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  dir.write("cut.model", model.substr(0, model.size() / 2));
  std::string noise(4096, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>((i * 2654435761u) >> 13);
  dir.write("noise.model", noise);
  dir.write("empty.model", "");
  for (const char* name : {"cut.model", "noise.model", "empty.model"}) {
    err = error_of([&] { wan::T5Tokenizer t(dir.file(name)); });
    EXPECT_NE(err.find(dir.file(name) + ": not a valid SentencePiece model"), std::string::npos)
        << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }

  // A directory laid out as the official release: <checkpoint>/google/umt5-xxl/spiece.model.
  fs::create_directories(dir.file("google/umt5-xxl"));
  dir.write("google/umt5-xxl/spiece.model", model);
  const wan::T5Tokenizer official(dir.file(""));
  EXPECT_EQ(fs::path(official.model_path()).parent_path().filename(), "umt5-xxl");
}

class PromptToContext : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = make_cpu_backend();
    encoder_ = wan::load_t5(wan::open_t5(encoder_path()), *backend_);
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<wan::T5Encoder> encoder_;
};

TEST_F(PromptToContext, ContextIsTheFullForwardTrimmedToTheRealTokens) {
  // T5EncoderModel.__call__: the encoder runs on all 512 positions with the mask, the output is
  // cut to sum(mask) rows. encode_prompt computes only the real tokens; both agree to fp32
  // rounding (summation order; the fixtures README bounds fp32 re-runs far below 1e-5).
  const wan::T5Tokenizer tok(tokenizer_dir());
  for (const char* name : {"plain", "non_ascii", "empty", "long"}) {
    const auto& c = expected_case(name);
    const wan::PromptContext got =
        wan::encode_prompt(tok, *encoder_, c["prompt"].get<std::string>());
    EXPECT_EQ(got.tokens.ids, c["ids"].get<std::vector<int64_t>>()) << name;
    const int64_t length = c["length"];
    ASSERT_EQ(shape_str(got.context.shape()), "[" + std::to_string(length) + ", 64]") << name;
    const Tensor full = encoder_->forward(got.tokens.ids, got.tokens.mask);
    ASSERT_EQ(shape_str(full.shape()), "[512, 64]");
    const double err = rel_l2(got.context, full.slice_rows(0, length).clone());
    EXPECT_LE(err, 1e-5) << name;
  }
}

TEST_F(PromptToContext, TokenizerLargerThanTheEncoderVocabularyIsRefused) {
  wan::T5Config small = encoder_->config();
  small.vocab = 200;  // the test tokenizer has 250 pieces
  const wan::T5Tokenizer tok(tokenizer_dir());
  const std::string err = error_of([&] { wan::check_tokenizer_fits(tok, small, "tiny.st"); });
  EXPECT_NE(err.find("has 250 pieces but the text encoder tiny.st has a vocabulary of 200"),
            std::string::npos)
      << err;
  EXPECT_NO_THROW(wan::check_tokenizer_fits(tok, encoder_->config(), "t5_tiny"));
}

// ---------------------------------------------------------------------------------------------
// fisdit text-encode --prompt

struct Result {
  int rc;
  std::string err;
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class TextEncodePromptCli : public ::testing::Test {
 protected:
  Result run(const std::string& args) {
    const std::string err_path = dir_.file("stderr.txt");
    const std::string cmd = "OMP_NUM_THREADS=2 " + std::string(FISDIT_CLI_PATH) + " " + args +
                            " >/dev/null 2>" + err_path;
    const int status = std::system(cmd.c_str());
    Result r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, {}};
    std::ifstream e(err_path);
    std::stringstream ss;
    ss << e.rdbuf();
    r.err = ss.str();
    return r;
  }
  static int lines(const std::string& s) {
    return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
  }
  // Expects exit 1, one line on stderr containing every needle, no output file.
  void expect_error(const std::string& args, const std::vector<std::string>& needles) {
    const std::string out = dir_.file("context.safetensors");
    const Result r = run(args + " --output " + out);
    EXPECT_EQ(r.rc, 1) << args << "\n" << r.err;
    EXPECT_EQ(lines(r.err), 1) << r.err;
    for (const std::string& needle : needles)
      EXPECT_NE(r.err.find(needle), std::string::npos) << "'" << needle << "' not in " << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
  TempDir dir_;
};

TEST_F(TextEncodePromptCli, PromptGivesPythonsIdsAndTheEncoderContext) {
  const std::string out = dir_.file("context.safetensors");
  for (const char* name : {"double_escaped", "ascii_whitespace", "non_ascii"}) {
    const auto& c = expected_case(name);
    const Result r =
        run("text-encode --text-encoder " + encoder_path() + " --tokenizer " + tokenizer_dir() +
            " --prompt " + shell_quote(c["prompt"].get<std::string>()) + " --output " + out);
    ASSERT_EQ(r.rc, 0) << name << "\n" << r.err;
    const auto file = SafetensorsFile::open(out);
    const Tensor ids = file->tensor("ids"), mask = file->tensor("mask");
    ASSERT_EQ(shape_str(ids.shape()), "[1, 512]");
    ASSERT_EQ(ids.dtype(), DType::I64);
    const std::vector<int64_t> got_ids(ids.data_as<int64_t>(), ids.data_as<int64_t>() + 512);
    const std::vector<int64_t> got_mask(mask.data_as<int64_t>(), mask.data_as<int64_t>() + 512);
    EXPECT_EQ(got_ids, c["ids"].get<std::vector<int64_t>>()) << name;
    EXPECT_EQ(got_mask, c["mask"].get<std::vector<int64_t>>()) << name;

    // The context is the encoder on those ids: the full 512-position forward, trimmed.
    auto backend = make_cpu_backend();
    auto encoder = wan::load_t5(wan::open_t5(encoder_path()), *backend);
    const int64_t length = c["length"];
    const Tensor full = encoder->forward(got_ids, got_mask);
    const Tensor context = file->tensor_f32("context");
    ASSERT_EQ(shape_str(context.shape()), "[" + std::to_string(length) + ", 64]") << name;
    // fp32 in another process (2 threads) and summation order: the bound of the test above.
    EXPECT_LE(rel_l2(context, full.slice_rows(0, length).clone()), 1e-5) << name;
  }
}

TEST_F(TextEncodePromptCli, TextLenTruncatesKeepingTheEndToken) {
  const auto& c = expected_case("plain_max29");
  const std::string out = dir_.file("context.safetensors");
  const Result r =
      run("text-encode --text-encoder " + encoder_path() + " --tokenizer " + tokenizer_model() +
          " --prompt " + shell_quote(c["prompt"].get<std::string>()) + " --text-len 29 --output " +
          out);
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto file = SafetensorsFile::open(out);
  const Tensor ids = file->tensor("ids");
  ASSERT_EQ(shape_str(ids.shape()), "[1, 29]");
  EXPECT_EQ(std::vector<int64_t>(ids.data_as<int64_t>(), ids.data_as<int64_t>() + 29),
            c["ids"].get<std::vector<int64_t>>());
  EXPECT_EQ(shape_str(file->tensor("context").shape()), "[29, 64]");
}

TEST_F(TextEncodePromptCli, BadTokenizerOrFlagsFailWithOneLine) {
  const std::string enc = "text-encode --text-encoder " + encoder_path();
  expect_error(enc + " --prompt 'a cat' --tokenizer " + dir_.file("nope"),
               {"--tokenizer: " + dir_.file("nope") + ": no such file or directory"});
  dir_.write("tokenizer.json", "{}");
  expect_error(enc + " --prompt 'a cat' --tokenizer " + dir_.file(""),
               {"--tokenizer: ", "has tokenizer.json but no spiece.model"});
  dir_.write("bad.model", "not a protobuf at all, just text");
  expect_error(enc + " --prompt 'a cat' --tokenizer " + dir_.file("bad.model"),
               {"--tokenizer: " + dir_.file("bad.model") + ": not a valid SentencePiece model"});
  expect_error(enc + " --prompt 'a cat'", {"--prompt needs --tokenizer"});
  expect_error(enc + " --prompt 'a cat' --tokenizer " + tokenizer_dir() + " --inputs x.st",
               {"--prompt and --inputs exclude each other"});
  expect_error(enc + " --prompt \"$(printf '\\377')\" --tokenizer " + tokenizer_dir(),
               {"--prompt is not valid UTF-8"});
  expect_error(enc + " --prompt 'a cat' --tokenizer " + tokenizer_dir() + " --text-len 0",
               {"--text-len must be at least 1"});
}

TEST_F(TextEncodePromptCli, TokenizerLargerThanTheEncoderVocabularyFailsClearly) {
  // The tiny encoder with its token embedding cut to 200 rows (< the tokenizer's 250 pieces).
  const auto fixture = SafetensorsFile::open(encoder_path());
  NamedTensors small;
  for (const TensorInfo& info : fixture->tensors()) {
    if (info.name.rfind("model.", 0) != 0) continue;
    Tensor t = fixture->tensor_f32(info.name);
    if (info.name == "model.token_embedding.weight") t = t.slice_rows(0, 200).clone();
    small.push_back({info.name.substr(6), t});
  }
  const std::string enc = dir_.file("t5_vocab200.safetensors");
  write_safetensors(enc, small);
  expect_error(
      "text-encode --text-encoder " + enc + " --tokenizer " + tokenizer_dir() + " --prompt 'a cat'",
      {"--tokenizer: ",
       "spiece.model has 250 pieces but the text encoder " + enc + " has a vocabulary of 200 ids"});
}

}  // namespace
}  // namespace fisdit
