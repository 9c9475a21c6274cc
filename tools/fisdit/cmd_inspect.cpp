// fisdit inspect: what a checkpoint holds, how fisdit reads it, or why it cannot.
#include <cstdio>
#include <map>

#include "cli.h"
#include "fisdit/error.h"
#include "models/wan/loader.h"

namespace fisdit::cli {

void register_inspect(CLI::App& app) {
  struct Args {
    std::string path;
    bool summary = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("inspect", "list a checkpoint's tensors, layout and config");
  cmd->add_option("PATH", args->path, ".safetensors or .pth file, index.json, or model directory")
      ->required();
  cmd->add_flag("--summary", args->summary, "skip the per-tensor listing");
  cmd->callback([args] {
    const Checkpoint ckpt = Checkpoint::open(args->path);
    std::printf("path         %s\n", args->path.c_str());
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
    if (!args->summary) {
      for (const auto& n : names) {
        const TensorInfo* info = ckpt.find(n);
        std::printf("  %-60s %-8s %s\n", n.c_str(), std::string(dtype_name(info->dtype)).c_str(),
                    shape_str(info->shape).c_str());
      }
    }
    // How fisdit would load it as a Wan DiT, or why it cannot.
    try {
      const wan::ModelSource src = wan::open_model(args->path);
      const wan::WanConfig& c = src.config;
      std::printf("layout       %s%s\n", layout_name(src.keys.layout).c_str(),
                  src.keys.prefix.empty() ? "" : (", prefix '" + src.keys.prefix + "'").c_str());
      std::printf("config       %s (from %s)\n", c.model_type.c_str(), src.config_origin.c_str());
      std::printf("  dim %d, ffn_dim %d, freq_dim %d, heads %d (head_dim %d), layers %d\n", c.dim,
                  c.ffn_dim, c.freq_dim, c.num_heads, c.head_dim(), c.num_layers);
      std::printf("  in_dim %d, out_dim %d, text_dim %d, text_len %d, patch [%d, %d, %d], eps %g\n",
                  c.in_dim, c.out_dim, c.text_dim, c.text_len, c.patch_size[0], c.patch_size[1],
                  c.patch_size[2], c.eps);
      const auto problems = wan::check_model(src);
      if (problems.empty()) {
        std::printf("loadable     yes: every tensor of the %s DiT is present with its shape\n",
                    c.model_type.c_str());
      } else {
        std::printf("loadable     no: %zu problem(s)\n", problems.size());
        for (size_t i = 0; i < problems.size() && i < 50; ++i)
          std::printf("  %s\n", problems[i].c_str());
        if (problems.size() > 50) std::printf("  ... and %zu more\n", problems.size() - 50);
      }
    } catch (const Error& e) {
      std::printf("loadable     no: %s\n", e.what());
    }
  });
}

}  // namespace fisdit::cli
