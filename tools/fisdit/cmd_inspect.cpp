// fisdit inspect: what a checkpoint holds, how fisdit reads it, or why it cannot.
#include <cstdio>
#include <map>

#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"

namespace fisdit::cli {

namespace {

struct InspectArgs {
  std::string path;
  bool summary = false;
};

void run_inspect(const InspectArgs& a) {
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
  std::printf("loadable     no: %s\n", why.c_str());
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "list a checkpoint's tensors, layout and config");
  cmd->add_option("PATH", args->path, ".safetensors or .pth file, index.json, or model directory")
      ->required();
  cmd->add_flag("--summary", args->summary, "skip the per-tensor listing");
  cmd->callback([args] { run_inspect(*args); });
}

}  // namespace fisdit::cli
