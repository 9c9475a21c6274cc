// fisdit dit: one DiT forward (the step gate open for FIS) on inputs from a safetensors file.
#include <chrono>
#include <cstdio>
#include <optional>

#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"

namespace fisdit::cli {

namespace {

struct DitArgs {
  std::string inputs, output;
  ExpertFlags experts;
  DeviceFlags device;
  FisFlags fis;
  std::string precision = "bf16";
};

// The latent the DiT takes: x, with the conditioning channels y concatenated (Wan I2V's y;
// HunyuanVideo 1.5's condition latent and mask, for T2V too): a model whose in_channels exceed its
// latent channels needs y, any other refuses it.
Tensor dit_input(const std::string& inputs, const models::ModelInfo& info, Backend& backend,
                 const Tensor& x, const Tensor& y) {
  if (x.ndim() != 4)
    throw Error(inputs + ": 'x' must be [C, F, H, W], got " + shape_str(x.shape()));
  const bool needs_y = info.in_channels != info.latent_channels;
  if (y.defined() != needs_y)
    throw Error(inputs + (y.defined()
                              ? ": 'y' given but the model takes no conditioning channels"
                              : ": this model needs 'y' (" +
                                    std::to_string(info.in_channels - info.latent_channels) +
                                    " conditioning channels)"));
  Tensor xd = backend.upload(x, DType::F32);
  if (y.defined()) {
    if (y.ndim() != 4 || y.dim(1) != x.dim(1) || y.dim(2) != x.dim(2) || y.dim(3) != x.dim(3))
      throw Error(inputs + ": 'y' " + shape_str(y.shape()) + " does not match 'x' " +
                  shape_str(x.shape()));
    xd = models::concat_channels(backend, xd, backend.upload(y, DType::F32));
  }
  if (xd.dim(0) != info.in_channels)
    throw Error(inputs + ": latent has " + std::to_string(xd.dim(0)) +
                " channels, the model expects " + std::to_string(info.in_channels) +
                (y.defined() ? " (x and y together)" : ""));
  return xd;
}

void run_dit(const DitArgs& a) {
  const accel::FisConfig fis = a.fis.resolve();
  const std::vector<LoraSpec> loras = a.experts.loras();
  auto backend = a.device.backend();
  const auto in = SafetensorsFile::open(a.inputs);
  const Tensor x = read_input(*in, "x", true), t = read_input(*in, "t", true),
               context = read_input(*in, "context", true), y = read_input(*in, "y", false);
  auto dit =
      load_model_reporting(a.experts.model, *backend, "model", loras, parse_precision(a.precision));
  const models::ModelInfo& info = dit->info();
  const Tensor xd = dit_input(a.inputs, info, *backend, x, y);
  const int frames = static_cast<int>(x.dim(1) / info.patch[0]);
  const accel::FisPlan plan(fis, info.num_blocks, 1, frames);
  status("fis " + fis.describe());
  const auto start = std::chrono::steady_clock::now();
  // The text side's further streams (HunyuanVideo 1.5: "byt5", "vision") and MeanFlow's r.
  models::TextContext text_in(context);
  for (const auto& [name, shape] : info.text_extra)
    if (Tensor e = read_input(*in, name, false); e.defined()) text_in.extra[name] = e;
  std::optional<float> r;
  if (const Tensor rt = read_input(*in, "r", false); rt.defined()) {
    if (rt.numel() != 1) throw Error(a.inputs + ": 'r' must hold one timestep");
    if (!info.meanflow) throw Error(a.inputs + ": 'r' given but the model is not a MeanFlow model");
    r = rt.to_vector()[0];
  }
  const models::TextEmbedding text = dit->embed_text(text_in);
  backend->flops().reset();
  Tensor out = dit->forward(xd, {t, r}, text, {&plan, /*step_open=*/true, {}, {}});
  backend->synchronize();
  char line[256];
  std::snprintf(line, sizeof line, "forward done in %.3f s, %.3f GFLOP executed",
                seconds_since(start), backend->flops().total() / 1e9);
  status(line);
  write_tensor(a.output, "out", backend->download(out));
}

}  // namespace

void register_dit(CLI::App& app) {
  auto args = std::make_shared<DitArgs>();
  CLI::App* cmd = app.add_subcommand("dit", "one DiT forward (the step gate open for FIS)");
  add_expert_flags(cmd, args->experts,
                   {.model_help = ".safetensors file or model directory",
                    .model_required = true,
                    .lora = LoraStyle::PerFile});
  cmd->add_option("--inputs", args->inputs, "safetensors with x, t, context (and y for i2v)")
      ->required();
  cmd->add_option("--output", args->output, "safetensors to write 'out' [C_out, F, H, W] to")
      ->required();
  add_device_flags(cmd, args->device, "cpu");
  add_fis_flags(cmd, args->fis);
  add_precision_flag(cmd, args->precision);
  cmd->callback([args] { run_dit(*args); });
}

}  // namespace fisdit::cli
