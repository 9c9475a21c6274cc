#include "serve/api.h"

#include <cmath>
#include <random>
#include <regex>
#include <set>

#include "accel/fis.h"
#include "fisdit/error.h"
#include "sched/flow_solvers.h"

namespace fisdit::serve {
namespace {

using nlohmann::json;

const std::set<std::string> kFields = {
    "prompt",   "negative_prompt", "image",  "size", "frames", "steps",    "seed",
    "guidance", "shift",           "solver", "fis",  "cache",  "precision"};
const std::vector<std::string> kFis = {"off", "balanced", "fast"};
const std::vector<std::string> kCaches = {"off", "magcache-force"};
const std::vector<std::string> kSolvers = {"euler", "unipc", "dpm++"};
constexpr size_t kMaxPromptBytes = 20000;
constexpr int kMaxSteps = 1000;
constexpr int64_t kMaxSeed = (int64_t{1} << 53) - 1;  // exact in a JSON number everywhere

std::string one_of(const std::vector<std::string>& values) {
  std::string s;
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + values[i];
  return s;
}

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::string string_field(const json& body, const char* name, const std::string& fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_string()) throw ParamError(name, ": must be a string");
  return v->get<std::string>();
}

int64_t integer_field(const json& body, const char* name, int64_t fallback, int64_t lo,
                      int64_t hi) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number_integer()) throw ParamError(name, ": must be an integer");
  // Unsigned values past int64 would wrap: compare them as unsigned first.
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi))
    throw ParamError(name, ": must be at most " + std::to_string(hi));
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    throw ParamError(name, " " + std::to_string(x) + ": must be in " + std::to_string(lo) + ".." +
                               std::to_string(hi));
  return x;
}

double number_field(const json& body, const char* name, double fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) throw ParamError(name, ": must be a number");
  const double x = v->get<double>();
  if (!std::isfinite(x) || std::fabs(x) > 1e6)
    throw ParamError(name, ": must be a finite number of magnitude at most 1e6");
  return x;
}

std::string choice_field(const json& body, const char* name, const std::string& fallback,
                         const std::vector<std::string>& allowed) {
  const std::string v = string_field(body, name, fallback);
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end())
    throw ParamError(name, ": must be one of " + one_of(allowed));
  return v;
}

}  // namespace

json resolve_request(const json& body, const ServedModel& m, std::string* image,
                     std::string* image_ext) {
  if (!body.is_object()) throw ParamError("body", ": must be a JSON object");
  for (const auto& [key, value] : body.items())
    if (key.empty())
      throw ParamError("body", ": a field with an empty name");
    else if (!kFields.count(key))
      throw ParamError(
          key, ": unknown field (the fields are " + one_of({kFields.begin(), kFields.end()}) + ")");
  const pipeline::GenerateOptions& d = m.base;
  json r;
  const json* prompt = field(body, "prompt");
  if (!prompt) throw ParamError("prompt", ": required");
  r["prompt"] = string_field(body, "prompt", "");
  const std::string& p = r["prompt"].get_ref<const std::string&>();
  if (p.find_first_not_of(" \t\r\n") == std::string::npos)
    throw ParamError("prompt", ": must not be empty");
  if (p.size() > kMaxPromptBytes)
    throw ParamError("prompt", ": longer than " + std::to_string(kMaxPromptBytes) + " bytes");
  r["negative_prompt"] = string_field(body, "negative_prompt", d.negative);
  if (r["negative_prompt"].get_ref<const std::string&>().size() > kMaxPromptBytes)
    throw ParamError("negative_prompt",
                     ": longer than " + std::to_string(kMaxPromptBytes) + " bytes");

  const std::string size = string_field(body, "size", size_text(d.width, d.height));
  static const std::regex size_re(R"(([1-9]\d{0,4})x([1-9]\d{0,4}))");
  std::smatch sm;
  if (!std::regex_match(size, sm, size_re))
    throw ParamError("size", ": must be WIDTHxHEIGHT such as 832x480, got '" + size + "'");
  const int64_t pixels = std::stoll(sm[1]) * std::stoll(sm[2]);
  if (pixels > m.max_pixels)
    throw ParamError("size", " " + size + ": more than the server's " +
                                 std::to_string(m.max_pixels) + " pixels per frame");
  r["size"] = size;
  r["frames"] = integer_field(body, "frames", d.frames, 1, m.max_frames);
  r["steps"] = integer_field(body, "steps", d.steps, 1, kMaxSteps);
  r["seed"] = integer_field(body, "seed", static_cast<int64_t>(d.seed), 0, kMaxSeed);
  r["guidance"] = number_field(body, "guidance", d.guidance);
  r["shift"] = number_field(body, "shift", d.shift);
  r["solver"] = choice_field(body, "solver", sched::solver_name(d.solver), kSolvers);
  r["fis"] = choice_field(body, "fis", "balanced", kFis);
  r["cache"] = choice_field(body, "cache", "off", kCaches);
  r["precision"] = choice_field(body, "precision", m.precision, {m.precision});

  const std::string img = string_field(body, "image", "");
  if (!img.empty() && !m.takes_image)
    throw ParamError("image", ": " + m.name + " is a text-to-video model and takes no image");
  if (img.empty() && m.needs_image)
    throw ParamError("image", ": " + m.name +
                                  " is an image-to-video model: give the first "
                                  "frame (base64 PNG or JPEG)");
  r["image"] = !img.empty();
  if (!img.empty()) {
    std::string bytes = decode_base64(img);
    if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0)
      *image_ext = ".png";
    else if (bytes.size() >= 3 && bytes.compare(0, 3, "\xff\xd8\xff") == 0)
      *image_ext = ".jpg";
    else
      throw ParamError("image", ": not a PNG or JPEG file");
    *image = std::move(bytes);
  }
  return r;
}

pipeline::GenerateOptions to_options(const json& r, const std::string& image_path,
                                     const ServedModel& m) {
  pipeline::GenerateOptions o = m.base;
  o.prompt = r.at("prompt").get<std::string>();
  o.negative = r.at("negative_prompt").get<std::string>();
  o.image = image_path;
  const std::string size = r.at("size").get<std::string>();
  const size_t x = size.find('x');
  o.width = std::stoi(size.substr(0, x));
  o.height = std::stoi(size.substr(x + 1));
  o.frames = r.at("frames").get<int>();
  o.steps = r.at("steps").get<int>();
  o.seed = r.at("seed").get<uint64_t>();
  o.guidance = r.at("guidance").get<float>();
  o.shift = r.at("shift").get<double>();
  o.solver = sched::parse_solver(r.at("solver").get<std::string>());
  o.fis = accel::fis_preset(r.at("fis").get<std::string>());  // a name from kFis, never a path
  o.cache = {};
  if (r.at("cache") == "magcache-force") {
    o.cache.enabled = true;
    o.cache.force = true;
  }
  o.progress = false;
  return o;
}

std::string size_text(int width, int height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

std::string api_param(const std::string& param) {
  if (param == "width" || param == "height") return "size";
  if (param == "negative") return "negative_prompt";
  if (param == "magcache_force" || param == "magcache_thresh") return "cache";
  return param;
}

std::string decode_base64(const std::string& text) {
  std::string_view s = text;
  // A data URL (what a browser's FileReader gives) carries its media type first.
  if (s.rfind("data:", 0) == 0) {
    const size_t comma = s.find(',');
    if (comma == std::string_view::npos || s.substr(0, comma).find(";base64") == s.npos)
      throw ParamError("image", ": a data URL must be base64 (data:image/png;base64,...)");
    s.remove_prefix(comma + 1);
  }
  std::string out;
  out.reserve(s.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0, pad = 0;
  for (const char c : s) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+' || c == '-')
      v = 62;
    else if (c == '/' || c == '_')
      v = 63;
    else if (c == '=') {
      ++pad;
      continue;
    } else if (c == '\n' || c == '\r' || c == ' ')
      continue;
    else
      throw ParamError("image", ": not base64 (character " + std::to_string(int(c)) + ")");
    if (pad) throw ParamError("image", ": not base64 (data after '=' padding)");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (pad > 2) throw ParamError("image", ": not base64 (too much '=' padding)");
  return out;
}

std::string new_job_id() {
  static thread_local std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string id = "vid_";
  for (int i = 0; i < 24; ++i) id += hex[rd() & 15];
  return id;
}

bool valid_job_id(const std::string& text) {
  if (text.size() != 28 || text.compare(0, 4, "vid_") != 0) return false;
  for (size_t i = 4; i < text.size(); ++i)
    if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f'))) return false;
  return true;
}

json job_json(const Job& j, std::optional<int64_t> queue_position) {
  const auto opt = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
  json o = {
      {"id", j.id},
      {"object", "video"},
      {"status", status_name(j.status)},
      {"created_at", j.created_at},
      {"started_at", opt(j.started_at)},
      {"completed_at", opt(j.completed_at)},
      {"progress", j.progress},
      {"stage", j.stage.empty() ? json(nullptr) : json(j.stage)},
      {"step", j.step},
      {"steps", j.steps},
      {"queue_position", queue_position ? json(*queue_position) : json(nullptr)},
      {"request", j.request},
      {"seconds", j.seconds},
      {"error", j.error.empty() ? json(nullptr) : json{{"message", j.error}}},
      {"content_url",
       j.status == JobStatus::Completed ? json("/v1/videos/" + j.id + "/content") : json(nullptr)}};
  return o;
}

json model_json(const ServedModel& m, const std::string& device) {
  const pipeline::GenerateOptions& d = m.base;
  return {{"model", m.name},
          {"task", m.task},
          {"device", device},
          {"takes_image", m.takes_image},
          {"needs_image", m.needs_image},
          {"fps", m.fps},
          {"defaults",
           {{"size", size_text(d.width, d.height)},
            {"frames", d.frames},
            {"steps", d.steps},
            {"seed", d.seed},
            {"guidance", d.guidance},
            {"shift", d.shift},
            {"solver", sched::solver_name(d.solver)},
            {"fis", "balanced"},
            {"cache", "off"},
            {"precision", m.precision},
            {"negative_prompt", d.negative}}},
          {"options",
           {{"fis", kFis}, {"cache", kCaches}, {"solver", kSolvers}, {"precision", {m.precision}}}},
          {"limits",
           {{"max_frames", m.max_frames},
            {"max_pixels", m.max_pixels},
            {"queue_max", m.queue_max},
            {"max_prompt_bytes", kMaxPromptBytes}}}};
}

std::string to_text(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json error_json(const std::string& message, const std::string& type, const std::string& param) {
  json e = {{"message", message}, {"type", type}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  return {{"error", e}};
}

}  // namespace fisdit::serve
