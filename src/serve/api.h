#pragma once
// The JSON side of `fisdit serve` (docs/SERVE.md): a submitted body checked field by field and
// resolved against the served model's defaults, the recorded request turned back into generate
// options, job ids, and the job and model objects the API returns.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "pipeline/generate.h"
#include "serve/job_store.h"

namespace fisdit::serve {

// What the server serves and the bounds it puts on a job.
struct ServedModel {
  std::string name;                // the model's name (fisdit.json) or its directory's
  pipeline::GenerateOptions base;  // model fields, and the defaults of every request field
  bool takes_image = false, needs_image = false;
  std::string task;       // "t2v", "i2v", "ti2v"
  std::string precision;  // what the device runs: "bf16" (cuda), "fp32" (cpu)
  double fps = 16;
  int max_frames = 241;
  int64_t max_pixels = 1280 * 720;
  int queue_max = 16;
};

// The body of POST /v1/videos checked for types, unknown fields and ranges, with the model's
// defaults filled in: the request as a job records and shows it (every field; "image" true or
// false). The decoded first frame goes to *image (PNG or JPEG bytes), its extension to
// *image_ext. Throws ParamError naming the JSON field.
nlohmann::json resolve_request(const nlohmann::json& body, const ServedModel& model,
                               std::string* image, std::string* image_ext);

// A recorded request as generate options on the served model.
pipeline::GenerateOptions to_options(const nlohmann::json& request, const std::string& image_path,
                                     const ServedModel& model);

// "WxH", as the request's size field.
std::string size_text(int width, int height);

// The API field of a generate parameter that check_request named (width -> size, ...).
std::string api_param(const std::string& param);

std::string decode_base64(const std::string& text);  // throws ParamError("image", ...)

std::string new_job_id();                    // "vid_" + 24 random hex digits
bool valid_job_id(const std::string& text);  // exactly that form: no path can come from it

// The job object of the API; queue_position only while queued.
nlohmann::json job_json(const Job& job, std::optional<int64_t> queue_position);
// GET /v1/model.
nlohmann::json model_json(const ServedModel& model, const std::string& device);
// JSON text of `j`; bytes that are not UTF-8 (a path or message quoting what a client sent)
// become U+FFFD instead of an exception.
std::string to_text(const nlohmann::json& j);

// {"error": {"message", "type", "param"}}.
nlohmann::json error_json(const std::string& message, const std::string& type,
                          const std::string& param = "");

}  // namespace fisdit::serve
