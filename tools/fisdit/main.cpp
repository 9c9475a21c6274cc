// fisdit: few-step video DiT inference with Frame Interleaved Sparsity.
#include <iostream>

#include "cli.h"
#include "fisdit/error.h"
#ifdef FISDIT_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"fisdit: few-step video diffusion transformers with Frame Interleaved Sparsity"};
#ifdef FISDIT_WITH_CUDA
  fisdit::register_cuda_backend(&fisdit::make_cuda_backend, &fisdit::cuda_device_count);
#endif
  app.require_subcommand(1);
  app.set_version_flag("--version", "fisdit 0.1.0");
  fisdit::cli::register_inspect(app);
  fisdit::cli::register_flops(app);
  fisdit::cli::register_dit(app);
  fisdit::cli::register_denoise(app);
  fisdit::cli::register_bench(app);
  fisdit::cli::register_vae(app);
  fisdit::cli::register_text_encode(app);
  fisdit::cli::register_calibrate(app);
#ifdef FISDIT_WITH_PIPELINE
  fisdit::cli::register_media(app);
  fisdit::cli::register_generate(app);
  fisdit::cli::register_analyze(app);
  fisdit::cli::register_quality(app);
#endif
#ifdef FISDIT_WITH_SERVE
  fisdit::cli::register_serve(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "fisdit: error: " << e.what() << " (see fisdit --help)" << std::endl;
    return 2;
  } catch (const fisdit::ParamError& e) {
    // A library error about a parameter, reported under the flag that sets it.
    std::cerr << "fisdit: error: " << fisdit::cli::flag_of(e.param()) << e.rest() << std::endl;
    return 1;
  } catch (const fisdit::Error& e) {
    std::cerr << "fisdit: error: " << e.what() << std::endl;
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "fisdit: error: out of host memory" << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "fisdit: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
