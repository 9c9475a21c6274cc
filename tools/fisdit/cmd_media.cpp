// fisdit video encode | image prepare | image encode: the media steps of `fisdit generate` on
// their own, for checking a pipeline's decoded video or its conditioning image outside a full run,
// and HunyuanVideo 1.5's image encoder (SigLIP) on a first frame.
#include <chrono>
#include <cstdio>
#include <optional>

#include "cli.h"
#include "fisdit/error.h"
#include "media/image.h"
#include "media/video.h"
#include "models/hunyuan15/vision_encoder.h"

namespace fisdit::cli {

namespace {

// [1, 3, F, H, W] or [3, F, H, W] -> [3, F, H, W]; anything else is refused naming the file.
Tensor video_of(const Tensor& t, const std::string& file, const std::string& name) {
  const Tensor v =
      t.ndim() == 5 && t.dim(0) == 1 ? t.reshape({t.dim(1), t.dim(2), t.dim(3), t.dim(4)}) : t;
  if (v.ndim() != 4 || v.dim(0) != 3)
    throw Error(file + ": '" + name + "' must be a video [3, F, H, W] (RGB, values in [-1, 1]), " +
                "got " + shape_str(t.shape()));
  return v;
}

struct VideoArgs {
  std::string mode, inputs, tensor = "video", output, frames_dir, preset = "medium", codec = "h264";
  double fps = 16.0;
  int crf = 18;
};

void run_video(const VideoArgs& a) {
  if (a.output.empty() && a.frames_dir.empty())
    throw Error("video encode: give --output FILE.mp4 and/or --frames-dir DIR");
  const auto in = SafetensorsFile::open(a.inputs);
  const Tensor video = video_of(read_input(*in, a.tensor, true), a.inputs, a.tensor);
  const std::string size = std::to_string(video.dim(3)) + "x" + std::to_string(video.dim(2));
  if (!a.output.empty()) {
    Mp4Options options;
    options.codec = a.codec == "mpeg4" ? VideoCodec::Mpeg4 : VideoCodec::H264;
    options.crf = a.crf;
    options.preset = a.preset;
    const Mp4Result r = write_mp4(a.output, video, a.fps, options);
    if (!r.warning.empty()) status("warning: " + r.warning);
    const std::string codec = r.encoder == "libx264" ? "H.264, libx264 CRF " + std::to_string(a.crf)
                                                     : "MPEG-4 Part 2, " + r.encoder;
    char rate[32];
    std::snprintf(rate, sizeof rate, "%g", a.fps);
    status("wrote " + a.output + ": " + std::to_string(r.frames) + " frames " + size + " at " +
           rate + " fps (" + codec + ")");
  }
  if (!a.frames_dir.empty()) {
    const std::vector<std::string> paths = write_png_frames(a.frames_dir, video);
    status("wrote " + std::to_string(paths.size()) + " PNG frames " + size + " to " + a.frames_dir);
  }
}

void register_video(CLI::App& app) {
  auto args = std::make_shared<VideoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "video", "Write a decoded video tensor as MP4 (H.264) and/or PNG frames, as generate does");
  cmd->add_option("mode", args->mode, "encode")->required()->check(CLI::IsMember({"encode"}));
  cmd->add_option("--inputs", args->inputs,
                  "safetensors holding the video [3, F, H, W] in [-1, 1] (as 'vae decode' "
                  "writes it)")
      ->required();
  cmd->add_option("--tensor", args->tensor, "name of the video tensor")->capture_default_str();
  cmd->add_option("--output", args->output, "MP4 file to write");
  cmd->add_option("--frames-dir", args->frames_dir,
                  "directory to write frame_0000.png, frame_0001.png, ... to (created)");
  cmd->add_option("--fps", args->fps, "frame rate (Wan 2.2: 16 for A14B, 24 for TI2V-5B)")
      ->capture_default_str();
  cmd->add_option("--crf", args->crf, "H.264 quality, 0 (lossless) .. 51; lower is better")
      ->capture_default_str();
  cmd->add_option("--preset", args->preset, "x264 preset (ultrafast .. veryslow)")
      ->capture_default_str();
  cmd->add_option("--codec", args->codec,
                  "h264 (libx264; MPEG-4 Part 2 with a warning when absent) or mpeg4")
      ->check(CLI::IsMember({"h264", "mpeg4"}))
      ->capture_default_str();
  cmd->callback([args] { run_video(*args); });
}

struct ImageArgs {
  std::string mode, image, method = "crop", output, png, vision_encoder;
  std::optional<std::string> size, resolution;
  std::optional<int64_t> max_area;
  DeviceFlags device;
};

// HunyuanVideo 1.5's I2V image features: the first frame (centre-cropped to --size when given, as
// the pipeline crops it to the video's size), stretched to the encoder's square with PIL's
// bicubic, through SigLIP: 'vision' [tokens, hidden] for dit / denoise inputs.
// --resolution 480p|720p: the pipeline's bucket base size.
int hunyuan_base_size(const std::string& resolution) {
  if (resolution == "480p") return 640;
  if (resolution == "720p") return 960;
  throw Error("--resolution must be 480p or 720p, got '" + resolution + "'");
}

void run_image_encode(const ImageArgs& a) {
  if (a.vision_encoder.empty())
    throw Error("image encode: give --vision-encoder (the vision_encoder/siglip folder)");
  if (a.output.empty()) throw Error("image encode: give --output FILE.safetensors");
  if (a.max_area)
    throw Error("image encode: --max-area belongs to image prepare; give --resolution or --size");
  Tensor img = read_image(a.image);
  int width = 0, height = 0;
  if (a.size) {
    parse_size(*a.size, width, height);
    if (width <= 0 || height <= 0) throw Error("--size must be positive, got '" + *a.size + "'");
  } else if (a.resolution) {
    const ImageSize s =
        hunyuan15_video_size(static_cast<int>(img.dim(2)), static_cast<int>(img.dim(1)),
                             hunyuan_base_size(*a.resolution));
    width = s.width;
    height = s.height;
  }
  if (width > 0) {
    // The pipeline crops the first frame to the video's size before the image processor.
    img = resize_and_center_crop_rounded(img, width, height);
    status("first frame centre-cropped to " + std::to_string(width) + "x" + std::to_string(height));
  }
  const hunyuan15::SiglipSource src = hunyuan15::open_siglip(a.vision_encoder);
  const hunyuan15::SiglipConfig& c = src.config;
  auto backend = a.device.backend();
  auto encoder = hunyuan15::load_siglip(src, *backend);
  status("loaded image encoder " + a.vision_encoder + ": SigLIP, " + std::to_string(c.layers) +
         " layers, hidden " + std::to_string(c.hidden) + ", " + std::to_string(c.image_size) +
         " px in " + std::to_string(c.tokens()) + " patches (config from " + src.config_origin +
         ")");
  const Tensor pixels = resize_image(img, c.image_size, c.image_size, ResizeFilter::PilBicubic);
  const auto start = std::chrono::steady_clock::now();
  const Tensor vision = encoder->encode(pixels);
  char line[128];
  std::snprintf(line, sizeof line, "encoded the image in %.3f s", seconds_since(start));
  status(line);
  write_tensor(a.output, "vision", vision);
}

void run_image(const ImageArgs& a) {
  if (a.mode == "encode") return run_image_encode(a);
  const bool hunyuan = a.method == "hunyuan";
  if (a.resolution && !hunyuan)
    throw Error("image prepare: --resolution belongs to --method hunyuan");
  if (hunyuan && a.max_area)
    throw Error("image prepare: --method hunyuan takes --resolution 480p|720p, not --max-area");
  if (!a.size && !(a.max_area && *a.max_area > 0) && !a.resolution)
    throw Error(
        "image prepare: give --size WIDTHxHEIGHT, --max-area PIXELS or (--method "
        "hunyuan) --resolution 480p|720p");
  if (a.output.empty() && a.png.empty())
    throw Error("image prepare: give --output FILE.safetensors and/or --png FILE.png");
  const Tensor img = read_image(a.image);
  const int in_w = static_cast<int>(img.dim(2)), in_h = static_cast<int>(img.dim(1));
  const bool crop = a.method == "crop";
  int width = 0, height = 0;
  if (a.size) {
    parse_size(*a.size, width, height);
    if (width <= 0 || height <= 0) throw Error("--size must be positive, got '" + *a.size + "'");
  } else {
    const ImageSize s = hunyuan ? hunyuan15_video_size(in_w, in_h, hunyuan_base_size(*a.resolution))
                        : crop  ? wan_ti2v_video_size(in_w, in_h, *a.max_area)
                                : wan_i2v_video_size(in_w, in_h, *a.max_area);
    width = s.width;
    height = s.height;
  }
  const Tensor out = hunyuan ? resize_and_center_crop_rounded(img, width, height)
                     : crop  ? resize_and_center_crop(img, width, height)
                             : resize_image(img, width, height, ResizeFilter::Bicubic);
  status("read " + a.image + " (" + std::to_string(in_w) + "x" + std::to_string(in_h) + "), " +
         (crop || hunyuan ? "resized and centre-cropped" : "stretched") + " to " +
         std::to_string(width) + "x" + std::to_string(height));
  if (!a.output.empty()) write_tensor(a.output, "image", out);
  if (!a.png.empty()) {
    write_png(a.png, image_to_rgb8(out));
    status("wrote " + a.png);
  }
}

void register_image(CLI::App& app) {
  auto args = std::make_shared<ImageArgs>();
  CLI::App* cmd = app.add_subcommand(
      "image",
      "Prepare an I2V / TI2V conditioning image as the official pipelines do (prepare), or encode "
      "it with HunyuanVideo 1.5's SigLIP image encoder (encode)");
  cmd->add_option("mode", args->mode, "prepare | encode")
      ->required()
      ->check(CLI::IsMember({"prepare", "encode"}));
  cmd->add_option("--image", args->image, "PNG or JPEG")->required();
  auto* size = cmd->add_option("--size", args->size, "output WIDTHxHEIGHT");
  auto* area = cmd->add_option("--max-area", args->max_area,
                               "pick the size as the official pipeline does for this pixel area "
                               "(e.g. 921600 = 1280*720; TI2V-5B: 901120 = 1280*704)");
  size->excludes(area);
  auto* resolution =
      cmd->add_option("--resolution", args->resolution,
                      "HunyuanVideo 1.5 (--method hunyuan, and encode): 480p or 720p, the "
                      "pipeline's size buckets for the image's aspect ratio");
  resolution->excludes(size);
  cmd->add_option("--method", args->method,
                  "crop: TI2V-5B (Lanczos resize to cover, centre crop; sizes multiple of 32); "
                  "stretch: I2V-A14B (bicubic resize to the size, no crop; multiple of 16); "
                  "hunyuan: HunyuanVideo 1.5 (the size bucket of --resolution, Lanczos resize "
                  "to cover, centre crop at the rounded offset)")
      ->check(CLI::IsMember({"crop", "stretch", "hunyuan"}))
      ->capture_default_str();
  cmd->add_option("--output", args->output,
                  "safetensors to write to: 'image' [3, H, W] in [-1, 1] (prepare) or 'vision' "
                  "[tokens, hidden] (encode)");
  cmd->add_option("--vision-encoder", args->vision_encoder,
                  "encode: HunyuanVideo 1.5's vision_encoder/siglip folder (or its image_encoder/, "
                  "or a SigLIP safetensors file)");
  add_device_flags(cmd, args->device, "cpu", "encode: cpu (fp32) or cuda (bf16)");
  cmd->add_option("--png", args->png, "also write the prepared image as an 8-bit PNG");
  cmd->callback([args] { run_image(*args); });
}

}  // namespace

// Both commands need the pipeline's media libraries, so they share this file (CMakeLists.txt
// leaves it out without the pipeline).
void register_media(CLI::App& app) {
  register_video(app);
  register_image(app);
}

}  // namespace fisdit::cli
