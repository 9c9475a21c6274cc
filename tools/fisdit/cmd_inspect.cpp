// fisdit inspect: what a checkpoint holds, how fisdit reads it, or why it cannot.
#include <cstdio>
#include <map>

#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"
#include "models/hunyuan15/release_layout.h"
#include "models/hunyuan15/text_encoder.h"
#include "models/hunyuan15/vision_encoder.h"

namespace fisdit::cli {

namespace {

struct InspectArgs {
  std::string path;
  bool summary = false;
};

void run_inspect(const InspectArgs& a) {
  // A whole HunyuanVideo 1.5 download: its parts, found or missing.
  if (hunyuan15::looks_like_release(a.path)) {
    for (const std::string& line : hunyuan15::describe_release(a.path))
      std::printf("%s\n", line.c_str());
    return;
  }
  const Checkpoint ckpt = Checkpoint::open(a.path);
  std::printf("path         %s\n", a.path.c_str());
  std::printf("files        %zu\n", ckpt.files().size());
  for (const auto& f : ckpt.files())
    std::printf("  %s (%llu bytes)\n", f->path().c_str(),
                static_cast<unsigned long long>(f->file_size()));
  const auto names = ckpt.names();
  std::map<std::string, std::pair<size_t, uint64_t>> by_dtype;
  for (const auto& n : names) {
    const TensorInfo* info = ckpt.find(n);
    auto& slot = by_dtype[std::string(dtype_name(info->dtype))];
    slot.first += 1;
    slot.second += info->nbytes;
  }
  std::printf("tensors      %zu\n", names.size());
  for (const auto& [dt, v] : by_dtype)
    std::printf("  %-8s %zu tensors, %.1f MiB\n", dt.c_str(), v.first,
                static_cast<double>(v.second) / (1 << 20));
  if (!a.summary) {
    for (const auto& n : names) {
      const TensorInfo* info = ckpt.find(n);
      std::printf("  %-60s %-8s %s\n", n.c_str(), std::string(dtype_name(info->dtype)).c_str(),
                  shape_str(info->shape).c_str());
    }
  }
  // How fisdit would load it: the family whose DiT it is, or why no family's.
  std::string why;
  for (const models::Family& family : models::families()) {
    std::string why_not;
    if (!family.recognizes(ckpt, &why_not)) {
      why += (why.empty() ? "" : "; ") + why_not;
      continue;
    }
    for (const std::string& line : family.explain(a.path)) std::printf("%s\n", line.c_str());
    return;
  }
  // Not a DiT: one of HunyuanVideo 1.5's encoders?
  if (const auto q = hunyuan15::find_qwen_text(a.path)) {
    std::printf(
        "loadable     yes: HunyuanVideo 1.5 text encoder (Qwen2.5-VL language model, "
        "names under '%s'), hidden %lld, %d layers (the first %d run), config from %s\n",
        q->prefix.c_str(), static_cast<long long>(q->config.hidden), q->config.layers,
        q->config.layers_run(), q->config_origin.c_str());
    return;
  }
  if (const auto s = hunyuan15::find_siglip(a.path)) {
    std::printf(
        "loadable     yes: HunyuanVideo 1.5 image encoder (SigLIP, names under '%s'), "
        "%d layers, %lld tokens, config from %s\n",
        s->prefix.c_str(), s->config.layers, static_cast<long long>(s->config.tokens()),
        s->config_origin.c_str());
    return;
  }
  std::printf("loadable     no: %s\n", why.c_str());
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "list a checkpoint's tensors, layout and config");
  cmd->add_option("PATH", args->path,
                  ".safetensors or .pth file, index.json, model directory, or a HunyuanVideo 1.5 "
                  "download's root")
      ->required();
  cmd->add_flag("--summary", args->summary, "skip the per-tensor listing");
  cmd->callback([args] { run_inspect(*args); });
}

}  // namespace fisdit::cli
