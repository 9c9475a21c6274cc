// fisdit serve: a release resident behind an HTTP API and a web page (docs/SERVE.md).
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli.h"
#include "pipeline/generate.h"
#include "pipeline/model_defaults.h"
#include "serve/server.h"

namespace fisdit::cli {

namespace {

struct ServeArgs {
  serve::ServeOptions server;
  serve::ServedModel model;       // limits; the rest is filled in from the flags and the release
  pipeline::GenerateOptions opt;  // LoRA flags
  double max_body_mib = 16;
  std::optional<std::string> size;
  std::optional<int> frames;
  ExpertFlags experts;
  SamplingFlags sampling;  // the defaults of a request
  DeviceFlags device;
};

void run_serve(ServeArgs& a) {
  serve::ServedModel& m = a.model;
  pipeline::GenerateOptions& o = m.base;
  o = a.opt;
  o.model = model_or_bundled(a.experts.model);
  o.parts["dit_low"] = a.experts.model_low;
  o.device = a.device.device;
  o.gpu_memory_limit = a.device.gpu_memory_limit;
  o.vae_precision = a.device.vae_precision;
  const pipeline::ModelDefaults d = pipeline::read_model_defaults(o.model);
  m.name = !d.name.empty() ? d.name : std::filesystem::path(o.model).filename().string();
  apply_model_defaults(d, a.size, a.frames, a.sampling);
  parse_size(a.size.value_or(kDefaultSize), o.width, o.height);
  o.frames = a.frames.value_or(kDefaultFrames);
  set_sampling(o, a.sampling.resolve());  // no per-expert guidance or boundary flags: unset
  o.progress = false;
  if (!(a.max_body_mib > 0 && a.max_body_mib <= 1024))
    throw ParamError("max_body_mib", ": must be in (0, 1024]");
  a.server.max_body_bytes = static_cast<size_t>(a.max_body_mib * 1048576.0);

  // SIGINT / SIGTERM go to one thread, which stops the server: blocked here, before any other
  // thread exists, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-answer is an error return, not a signal

  serve::Server server(m, a.server);
  std::thread([&server, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    status(std::string("fisdit serve: ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
           ": stopping (a running job is marked failed, queued jobs stay queued)");
    server.stop();
  }).detach();
  status("fisdit serve: " + server.model().name + " (" + server.model().task + ") on " + o.device +
         ", data in " + a.server.data + "; loading the text encoder and the DiT");
  server.run([&](int port, double load_seconds) {
    char loaded[64];
    std::snprintf(loaded, sizeof loaded, "%.1f", load_seconds);
    status("fisdit serve: loaded in " + std::string(loaded) + " s");
    // The one line on stdout: scripts (and the tests) wait for it.
    std::printf("fisdit serve: listening on http://%s:%d\n", a.server.host.c_str(), port);
    std::fflush(stdout);
  });
  status("fisdit serve: stopped");
}

}  // namespace

void register_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  serve::ServeOptions& s = args->server;
  serve::ServedModel& m = args->model;
  CLI::App* cmd = app.add_subcommand(
      "serve", "keep a release loaded behind an HTTP API and a web page (docs/SERVE.md)");
  add_expert_flags(cmd, args->experts,
                   {.model_help = "release directory (official or diffusers layout); default: "
                                  "the bundled model (models/fisdit-shapes, or $FISDIT_MODEL)",
                    .model_low_help = "low-noise expert (A14B), if not in --model"});
  cmd->add_option("--lora-high", args->opt.lora_high, "LoRA for the high-noise expert");
  cmd->add_option("--lora-low", args->opt.lora_low, "LoRA for the low-noise expert");
  cmd->add_option("--lora-strength", args->opt.lora_strength, "LoRA scale")->capture_default_str();
  cmd->add_option("--host", s.host, "address to listen on; other than loopback it needs --api-key")
      ->capture_default_str();
  cmd->add_option("--port", s.port, "TCP port (0: any free port, printed at start)")
      ->capture_default_str();
  cmd->add_option("--data", s.data, "directory for the job database, videos and inputs")
      ->capture_default_str();
  cmd->add_option("--api-key", s.api_key,
                  "require 'Authorization: Bearer KEY' on every route but /health and /");
  cmd->add_option("--cors", s.cors, "send Access-Control-Allow-Origin with this origin");
  cmd->add_option("--queue-max", m.queue_max, "jobs queued or running at once (429 past it)")
      ->capture_default_str();
  cmd->add_option("--max-body-mib", args->max_body_mib, "largest request body (413 past it)")
      ->capture_default_str();
  cmd->add_option("--max-frames", m.max_frames, "most frames a job may ask for")
      ->capture_default_str();
  cmd->add_option("--max-pixels", m.max_pixels, "most width x height a job may ask for")
      ->capture_default_str();
  cmd->add_option("--size", args->size,
                  std::string("a job's default WxH (default: the model's fisdit.json, else ") +
                      kDefaultSize + ")");
  cmd->add_option("--frames", args->frames, "a job's default frame count, 4k+1");
  add_sampling_flags(
      cmd, args->sampling,
      {.guidance_per_expert = false, .boundary = false, .defaults_from_model = true});
  add_device_flags(cmd, args->device, default_device(),
                   "cuda or cpu (default: cuda when this build has it and a GPU is present)");
  add_memory_limit_flag(cmd, args->device);
  add_vae_precision_flag(cmd, args->device);
  add_precision_flag(cmd, args->opt.precision);
  cmd->callback([args] { run_serve(*args); });
}

}  // namespace fisdit::cli
